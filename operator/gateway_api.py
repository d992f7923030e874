"""The pool's ``GatewayAccepted`` condition: whether it has a Gateway API Inference Extension (GIE)
InferencePool, and what the Gateways that route to it report. Pure.

A Gateway controller writes, for each Gateway (a *parent*) that routes to a GIE pool, the
conditions ``Accepted`` and ``ResolvedRefs`` under ``status.parents[]`` (GIE
``api/v1/inferencepool_types.go``, ``ParentStatus``: reasons such as ``NotSupportedByParent``,
``HTTPRouteNotAccepted``, ``InvalidExtensionRef``). The pool sums them up in one condition:

============  =================  ==========================================================
status        reason             when
============  =================  ==========================================================
(none)                           spec.gatewayAPI unset and the GIE CRD not served
False         NotRequested       the GIE CRD is served, spec.gatewayAPI is unset
False         CRDNotInstalled    spec.gatewayAPI is set, the GIE CRD is not served
Unknown       Pending            the GIE pool is not created yet, or its Gateways have not
                                 judged its current generation
False         NoGateway          no Gateway routes to it (no accepted HTTPRoute names it)
True          Accepted           a Gateway accepted it and resolved its endpoint picker
False         (the Gateway's)    every Gateway that reports on it refused it
============  =================  ==========================================================

The condition never touches ``Ready``: the pool serves through its router either way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tandem.api import ConditionType, InferencePoolSpec
from tandem.operator.build.gateway import GIE_KIND
from tandem.operator.capabilities import Capabilities
from tandem.operator.status import ConditionStatus, Reported

NOT_REQUESTED = "NotRequested"
CRD_NOT_INSTALLED = "CRDNotInstalled"
PENDING = "Pending"
NO_GATEWAY = "NoGateway"
ACCEPTED = "Accepted"
NOT_ACCEPTED = "NotAccepted"  # a refusal whose reason is missing or not a condition reason
# A Gateway's own text is kept to MAX_QUOTED characters (metav1.Condition allows 32768 per
# message, and a GIE pool may have 32 parents); the whole message to MAX_MESSAGE.
MAX_QUOTED = 512
MAX_MESSAGE = 2048
_REASON = re.compile(r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")  # metav1.Condition's pattern
_GIE = "inferencepools.inference.networking.k8s.io"
_RANK: tuple[ConditionStatus, ...] = ("True", "Unknown", "False")


@dataclass(frozen=True)
class Exposed:
    """The pool owns the GIE InferencePool ``name``: its status decides the condition."""

    name: str


# What ``decide`` knows: the condition itself, where no GIE pool is rendered; else the pool to read.
GatewayPlan = Reported | Exposed | None


def _reported(status: ConditionStatus, reason: str, message: str) -> Reported:
    return Reported(ConditionType.GATEWAY_ACCEPTED, status, reason, message)


def gateway_plan(
    spec: InferencePoolSpec, caps: Capabilities, objects: Sequence[Mapping[str, Any]]
) -> GatewayPlan:
    """From the spec, the cluster and the children rendered (``build`` decides the GIE pool)."""
    rendered = next((o for o in objects if o["kind"] == GIE_KIND), None)
    if rendered is not None:
        return Exposed(rendered["metadata"]["name"])
    if spec.gateway_api is not None:
        return _reported(
            "False",
            CRD_NOT_INSTALLED,
            f"spec.gatewayAPI: the cluster serves no {_GIE} (v1); install the Gateway API Inference "
            "Extension's CRDs",
        )
    if caps.gie_api_version is not None:
        return _reported(
            "False",
            NOT_REQUESTED,
            "the cluster serves the Gateway API Inference Extension; set spec.gatewayAPI.endpointPicker "
            "to put the decode engines behind a Gateway and your endpoint picker",
        )
    return None


def gateway_conditions(
    plan: GatewayPlan, children: Mapping[tuple[str, str], Mapping[str, Any]]
) -> tuple[Reported, ...]:
    """The condition to show, reading the live GIE pool among the pool's ``children`` (by kind, name)."""
    if plan is None:
        return ()
    if isinstance(plan, Exposed):
        return (reflected(plan.name, children.get((GIE_KIND, plan.name))),)
    return (plan,)


def _quoted(text: object, limit: int = MAX_QUOTED) -> str:
    words = " ".join(str(text).split())
    return words if len(words) <= limit else words[: limit - 1] + "…"


def _parent(entry: Mapping[str, Any]) -> str:
    ref = entry.get("parentRef")
    ref = ref if isinstance(ref, Mapping) else {}
    namespace = f"{ref['namespace']}/" if ref.get("namespace") else ""
    return _quoted(f"{ref.get('kind') or 'Gateway'} {namespace}{ref.get('name') or '?'}")


def _verdict(entry: Mapping[str, Any], generation: int) -> Reported:
    """One parent's judgement of the GIE pool's current generation."""
    listed = entry.get("conditions")
    conditions = {
        c.get("type"): c for c in (listed if isinstance(listed, list) else []) if isinstance(c, Mapping)
    }
    accepted, resolved = conditions.get("Accepted"), conditions.get("ResolvedRefs")
    who = _parent(entry)
    judged = [c for c in (accepted, resolved) if c is not None]
    stale = any(isinstance(g := c.get("observedGeneration"), int) and g < generation for c in judged)
    if accepted is None or accepted.get("status") not in ("True", "False") or stale:
        return _reported("Unknown", PENDING, f"{who} has not judged generation {generation} yet")
    for condition in judged:
        if condition.get("status") == "False":
            reason = str(condition.get("reason") or "")
            why = _quoted(condition.get("message") or condition.get("type"))
            return _reported("False", reason if _REASON.match(reason) else NOT_ACCEPTED, f"{who}: {why}")
    return _reported("True", ACCEPTED, who)


def reflected(name: str, live: Mapping[str, Any] | None) -> Reported:
    """The condition from the live GIE pool ``name`` (None: not created yet)."""
    what = f"InferencePool.inference.networking.k8s.io/{name}"
    if live is None:
        return _reported("Unknown", PENDING, f"{what} is not created yet")
    generation = live.get("metadata", {}).get("generation")
    generation = generation if isinstance(generation, int) else 0
    parents = (live.get("status") or {}).get("parents")
    entries = [p for p in (parents if isinstance(parents, list) else []) if isinstance(p, Mapping)]
    if not entries:
        return _reported(
            "False",
            NO_GATEWAY,
            f"no Gateway routes to {what}: name it in an HTTPRoute's backendRefs "
            f"(group inference.networking.k8s.io, kind InferencePool, name {name})",
        )
    # The best verdict decides (one Gateway accepting is enough); the message lists them all.
    verdicts = sorted((_verdict(entry, generation) for entry in entries), key=lambda v: _RANK.index(v.status))
    best = verdicts[0]
    message = "; ".join(v.message for v in verdicts)
    message = f"{what} accepted by {message}" if best.status == "True" else message
    return _reported(best.status, best.reason, _quoted(message, MAX_MESSAGE))
