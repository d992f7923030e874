"""The route choice, table-driven over frozen endpoint snapshots."""

from __future__ import annotations

import random

import pytest

from tandem.api.spec import BalancePolicy, DisaggregationMode
from tandem.router.decision import (
    EndpointSnapshot,
    RequestFacts,
    Role,
    Route,
    RoutingPolicy,
    estimate_prompt_tokens,
    filters,
    needs_exact_count,
    pickers,
    plan_route,
    scorers,
    wants_disaggregation,
)
from tandem.router.errors import Ineligibility, NoEligibleEndpointError


def decoder(n: int, **state: object) -> EndpointSnapshot:
    return EndpointSnapshot(url=f"http://10.0.1.{n}:8000", host=f"10.0.1.{n}", role=Role.DECODE, **state)  # type: ignore[arg-type]


def prefiller(n: int, **state: object) -> EndpointSnapshot:
    return EndpointSnapshot(url=f"http://10.0.2.{n}:8000", host=f"10.0.2.{n}", role=Role.PREFILL, **state)  # type: ignore[arg-type]


SHORT = RequestFacts(prompt_tokens=100, exact=True)
LONG = RequestFacts(prompt_tokens=4000, exact=True)
AUTO = RoutingPolicy(threshold=1024)
ALWAYS = RoutingPolicy(mode=DisaggregationMode.ALWAYS, threshold=1024)
NEVER = RoutingPolicy(mode=DisaggregationMode.NEVER, threshold=1024)


@pytest.mark.parametrize(
    ("facts", "policy", "decoders", "prefillers", "route", "decode", "prefill", "fallback"),
    [
        pytest.param(
            SHORT, AUTO, [decoder(1)], [prefiller(1)], Route.DIRECT, 1, None, None, id="short-direct"
        ),
        pytest.param(LONG, AUTO, [decoder(1)], [prefiller(1)], Route.PD, 1, 1, None, id="long-pd"),
        pytest.param(
            RequestFacts(prompt_tokens=1024, exact=True),
            AUTO,
            [decoder(1)],
            [prefiller(1)],
            Route.PD,
            1,
            1,
            None,
            id="threshold-is-inclusive",
        ),
        pytest.param(LONG, NEVER, [decoder(1)], [prefiller(1)], Route.DIRECT, 1, None, None, id="never-mode"),
        pytest.param(
            RequestFacts(prompt_tokens=4000, exact=True, splittable=False),
            AUTO,
            [decoder(1)],
            [prefiller(1)],
            Route.DIRECT,
            1,
            None,
            None,
            id="unsplittable-direct",
        ),
        pytest.param(
            LONG,
            AUTO,
            [decoder(1)],
            [],
            Route.DIRECT,
            1,
            None,
            Ineligibility.NO_PREFILL,
            id="no-prefill-local",
        ),
        pytest.param(
            LONG,
            AUTO,
            [decoder(1)],
            [prefiller(1, healthy=False)],
            Route.DIRECT,
            1,
            None,
            Ineligibility.NO_PREFILL,
            id="unhealthy-prefill-local",
        ),
        pytest.param(
            LONG,
            AUTO,
            [decoder(1)],
            [prefiller(1, in_flight=16), prefiller(2, waiting=20)],
            Route.DIRECT,
            1,
            None,
            Ineligibility.PREFILL_SATURATED,
            id="saturated-prefill-local",
        ),
        pytest.param(
            LONG,
            AUTO,
            [decoder(1)],
            [prefiller(1, in_flight=16), prefiller(2, in_flight=3)],
            Route.PD,
            1,
            2,
            None,
            id="skips-saturated-prefiller",
        ),
        pytest.param(
            LONG,
            AUTO,
            [decoder(1, in_flight=5), decoder(2, in_flight=1), decoder(3, running=3)],
            [prefiller(1, in_flight=2), prefiller(2)],
            Route.PD,
            2,
            2,
            None,
            id="least-loaded-pair",
        ),
        pytest.param(
            SHORT,
            AUTO,
            [decoder(1, running=4, waiting=4), decoder(2, in_flight=2)],
            [],
            Route.DIRECT,
            2,
            None,
            None,
            id="engine-load-counts",
        ),
        pytest.param(
            SHORT,
            AUTO,
            [decoder(1, healthy=False), decoder(2, in_flight=9)],
            [],
            Route.DIRECT,
            2,
            None,
            None,
            id="unhealthy-decoder-skipped",
        ),
    ],
)
def test_plan_route_chooses(
    facts: RequestFacts,
    policy: RoutingPolicy,
    decoders: list[EndpointSnapshot],
    prefillers: list[EndpointSnapshot],
    route: Route,
    decode: int,
    prefill: int | None,
    fallback: Ineligibility | None,
) -> None:
    plan = plan_route(facts, policy, decoders, prefillers)
    assert plan.route is route
    assert plan.decode.url == f"http://10.0.1.{decode}:8000"
    if route is Route.PD:
        assert plan.prefill is not None and plan.prefill.url == f"http://10.0.2.{prefill}:8000"
    assert plan.fallback == fallback


@pytest.mark.parametrize(
    ("decoders", "prefillers", "reason"),
    [
        pytest.param([], [prefiller(1)], Ineligibility.NO_DECODE, id="no-decoder"),
        pytest.param([decoder(1, healthy=False)], [prefiller(1)], Ineligibility.NO_DECODE, id="decoder-down"),
        pytest.param([decoder(1)], [], Ineligibility.NO_PREFILL, id="always-no-prefill"),
        pytest.param(
            [decoder(1)], [prefiller(1, waiting=30)], Ineligibility.PREFILL_SATURATED, id="always-saturated"
        ),
    ],
)
def test_plan_route_refuses_with_reason(
    decoders: list[EndpointSnapshot], prefillers: list[EndpointSnapshot], reason: Ineligibility
) -> None:
    with pytest.raises(NoEligibleEndpointError) as caught:
        plan_route(LONG, ALWAYS, decoders, prefillers)
    assert caught.value.reason is reason
    assert caught.value.status == 503


def test_plan_route_excludes_failed_endpoints() -> None:
    plan = plan_route(
        LONG,
        AUTO,
        [decoder(1), decoder(2, in_flight=4)],
        [prefiller(1), prefiller(2, in_flight=4)],
        exclude={"http://10.0.1.1:8000", "http://10.0.2.1:8000"},
    )
    assert (plan.decode.url, plan.prefill and plan.prefill.url) == (
        "http://10.0.1.2:8000",
        "http://10.0.2.2:8000",
    )


@pytest.mark.parametrize(
    ("free", "mode", "route", "decode"),
    [
        pytest.param([20, 20], DisaggregationMode.AUTO, Route.PD, 1, id="room-on-both"),
        pytest.param([3, 20], DisaggregationMode.AUTO, Route.PD, 2, id="skips-full-buffer"),
        pytest.param([3, 15], DisaggregationMode.AUTO, Route.DIRECT, 1, id="all-full-goes-local"),
    ],
)
def test_pd_buffer_admission(free: list[int], mode: DisaggregationMode, route: Route, decode: int) -> None:
    # 4000 tokens in 256-token chunks need 16 chunks.
    policy = RoutingPolicy(mode=mode, threshold=1024, pd_chunk_tokens=256)
    decoders = [decoder(i + 1, buffer_free_chunks=f) for i, f in enumerate(free)]
    plan = plan_route(LONG, policy, decoders, [prefiller(1)])
    assert plan.route is route
    assert plan.decode.url == f"http://10.0.1.{decode}:8000"


def test_pd_buffer_full_refuses_in_always_mode() -> None:
    policy = RoutingPolicy(mode=DisaggregationMode.ALWAYS, threshold=1024, pd_chunk_tokens=256)
    with pytest.raises(NoEligibleEndpointError) as caught:
        plan_route(LONG, policy, [decoder(1, buffer_free_chunks=15)], [prefiller(1)])
    assert caught.value.reason is Ineligibility.PD_BUFFER_FULL


def test_idle_decoders_take_turns() -> None:
    decoders = [decoder(1), decoder(2), decoder(3)]
    chosen = {plan_route(SHORT, AUTO, decoders, [], turn=t).decode.url for t in range(3)}
    assert len(chosen) == 3


@pytest.mark.parametrize(
    ("failing", "peer", "chosen"),
    [
        pytest.param({"failures": 1}, {}, 2, id="idle-peer-beats-a-fast-failer"),
        pytest.param({"failures": 3}, {"in_flight": 2}, 2, id="busy-peer-beats-three-failures"),
        pytest.param({"failures": 1}, {"in_flight": 3}, 1, id="failer-is-not-starved"),
        pytest.param({"failures": 0}, {"in_flight": 1}, 1, id="success-clears-the-penalty"),
    ],
)
def test_least_load_counts_failures_in_a_row_as_load(
    failing: dict[str, int], peer: dict[str, int], chosen: int
) -> None:
    """An endpoint answering 500 at once holds no requests open: on open requests alone, least
    load would send it nearly everything (issue #11: 91 of 100 requests got 502)."""
    for turn in range(4):  # ties rotate with the turn; these are not ties
        plan = plan_route(SHORT, AUTO, [decoder(1, **failing), decoder(2, **peer)], [], turn=turn)
        assert plan.decode.url == f"http://10.0.1.{chosen}:8000"


def test_prefillers_balance_on_failures_too() -> None:
    plan = plan_route(LONG, AUTO, [decoder(1)], [prefiller(1, failures=2), prefiller(2, in_flight=1)])
    assert plan.prefill is not None and plan.prefill.url == "http://10.0.2.2:8000"


def test_round_robin_cycles_in_url_order() -> None:
    policy = RoutingPolicy(balance=BalancePolicy.ROUND_ROBIN)
    decoders = [decoder(3), decoder(1, in_flight=50), decoder(2)]
    urls = [plan_route(SHORT, policy, decoders, [], turn=t).decode.url for t in range(4)]
    assert [u.split(".")[-1] for u in urls] == ["1:8000", "2:8000", "3:8000", "1:8000"]


def test_random_policy_uses_the_given_generator() -> None:
    policy = RoutingPolicy(balance=BalancePolicy.RANDOM)
    decoders = [decoder(i) for i in range(1, 6)]
    first = [plan_route(SHORT, policy, decoders, [], rng=random.Random(7)).decode.url for _ in range(3)]
    assert len(set(first)) == 1  # same seed, same choice
    spread = {plan_route(SHORT, policy, decoders, [], rng=random.Random(s)).decode.url for s in range(40)}
    assert len(spread) == 5


@pytest.mark.parametrize("balance", [BalancePolicy.SESSION, BalancePolicy.PREFIX])
def test_affinity_keeps_a_key_on_one_decoder_whatever_the_load(balance: BalancePolicy) -> None:
    policy = RoutingPolicy(balance=balance)
    facts = RequestFacts(prompt_tokens=10, exact=False, session_key="alice", prefix_key="alice")
    decoders = [decoder(1), decoder(2), decoder(3)]
    home = plan_route(facts, policy, decoders, []).decode.url
    busy = [decoder(i, in_flight=100) if f"10.0.1.{i}:" in home else decoder(i) for i in (1, 2, 3)]
    assert plan_route(facts, policy, busy, [], turn=5).decode.url == home


def test_affinity_moves_only_the_keys_of_a_removed_decoder() -> None:
    decoders = [decoder(i) for i in range(1, 6)]
    keys = [f"session-{k}" for k in range(200)]
    before = {k: pickers.highest(decoders, scorers.affinity(k)).url for k in keys}
    after = {k: pickers.highest(decoders[:-1], scorers.affinity(k)).url for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert moved and all(before[k] == decoders[-1].url for k in moved)


def test_affinity_without_a_key_balances_on_load() -> None:
    policy = RoutingPolicy(balance=BalancePolicy.SESSION)
    plan = plan_route(SHORT, policy, [decoder(1, in_flight=3), decoder(2)], [])
    assert plan.decode.url.startswith("http://10.0.1.2")


@pytest.mark.parametrize(
    ("estimate", "mode", "expected"),
    [
        (100, DisaggregationMode.AUTO, False),  # far below
        (700, DisaggregationMode.AUTO, False),  # clearly direct
        (800, DisaggregationMode.AUTO, True),  # near, below
        (1200, DisaggregationMode.AUTO, True),  # near, above
        (5000, DisaggregationMode.AUTO, True),  # a handoff's budget needs the exact count
        (5000, DisaggregationMode.NEVER, False),  # never split: never count
    ],
)
def test_needs_exact_count(estimate: int, mode: DisaggregationMode, expected: bool) -> None:
    policy = RoutingPolicy(mode=mode, threshold=1000)
    assert needs_exact_count(estimate, policy) is expected


def test_estimate_and_threshold() -> None:
    assert estimate_prompt_tokens(0) == 0
    assert estimate_prompt_tokens(9) == 3
    assert wants_disaggregation(RequestFacts(prompt_tokens=10, exact=True), RoutingPolicy(threshold=0))
    assert not wants_disaggregation(RequestFacts(prompt_tokens=9, exact=True), RoutingPolicy(threshold=10))


def test_scores_stay_in_unit_interval() -> None:
    for endpoint in (decoder(1), decoder(2, in_flight=1000, kv_usage=5.0), decoder(3, kv_usage=-1.0)):
        assert 0.0 < scorers.least_load(endpoint) <= 1.0
        assert 0.0 <= scorers.affinity("k")(endpoint) < 1.0


def test_filters_compose_in_order() -> None:
    endpoints = [
        decoder(1, healthy=False),
        decoder(2, buffer_free_chunks=1),
        decoder(3),
        decoder(4, in_flight=9),
    ]
    kept = filters.apply(
        [filters.healthy, filters.with_buffer(2), filters.below_load(5), filters.excluding({"x"})], endpoints
    )
    assert [e.url for e in kept] == ["http://10.0.1.3:8000"]
