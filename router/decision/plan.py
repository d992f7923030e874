"""The decision: choose the decoder first, then, for a handoff, the prefiller (or go local)."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

import msgspec

from tandem.api.spec import DisaggregationMode
from tandem.router.decision import filters, pickers, scorers
from tandem.router.decision.balance import BALANCE
from tandem.router.decision.classify import Route, wants_disaggregation
from tandem.router.decision.snapshot import EndpointSnapshot, RequestFacts, RoutingPolicy
from tandem.router.errors import Ineligibility, NoEligibleEndpointError


class RoutePlan(msgspec.Struct, frozen=True):  # built per request: its __init__ in C
    route: Route
    decode: EndpointSnapshot
    prefill: EndpointSnapshot | None = None
    fallback: Ineligibility | None = None  # why a request above the threshold stays local


def pick_decode(
    candidates: Sequence[EndpointSnapshot],
    policy: RoutingPolicy,
    facts: RequestFacts,
    turn: int,
    rng: random.Random | None,
) -> EndpointSnapshot:
    return BALANCE[policy.balance].pick(candidates, facts, turn, rng)


def plan_route(
    facts: RequestFacts,
    policy: RoutingPolicy,
    decoders: Sequence[EndpointSnapshot],
    prefillers: Sequence[EndpointSnapshot],
    *,
    exclude: Collection[str] = (),
    turn: int = 0,
    rng: random.Random | None = None,
) -> RoutePlan:
    """Raises NoEligibleEndpointError when no decoder can take the request, or when a handoff is
    required (mode Always) and no pair can do it."""
    usable = (filters.healthy, filters.excluding(exclude)) if exclude else (filters.healthy,)
    decode_pool = filters.apply(usable, decoders)
    if not decode_pool:
        raise NoEligibleEndpointError(Ineligibility.NO_DECODE)
    if not wants_disaggregation(facts, policy):
        return RoutePlan(Route.DIRECT, pick_decode(decode_pool, policy, facts, turn, rng))

    reason: Ineligibility | None = None
    prefill_pool = filters.apply(usable, prefillers)
    receivers = filters.with_buffer(policy.pd_chunks(facts.prompt_tokens))(decode_pool)
    if not prefill_pool:
        reason = Ineligibility.NO_PREFILL
    elif not (prefill_pool := filters.below_load(policy.prefill_saturation)(prefill_pool)):
        reason = Ineligibility.PREFILL_SATURATED
    elif not receivers:
        reason = Ineligibility.PD_BUFFER_FULL
    if reason is not None:
        if policy.mode == DisaggregationMode.ALWAYS:
            raise NoEligibleEndpointError(
                reason, f"{facts.prompt_tokens} prompt tokens need a handoff (mode Always)"
            )
        return RoutePlan(Route.DIRECT, pick_decode(decode_pool, policy, facts, turn, rng), fallback=reason)
    decode = pick_decode(receivers, policy, facts, turn, rng)
    prefill = pickers.highest(prefill_pool, scorers.least_load, turn)
    return RoutePlan(Route.PD, decode, prefill)
