"""The pool's status, computed from what was decided and what the workloads report. Pure.

Conditions: ``Planned`` (a feasible plan for a valid spec), ``Progressing`` (a rollout under way),
``Ready`` (every component has its desired replicas ready on the current spec) and ``Degraded``
(Ready on the current spec before, now serving with some component below its desired replicas; a
rollout that has not yet been Ready is progressing, not degraded, even while it already serves). A
problem (invalid spec, infeasible plan, missing cluster capability, failed apply) turns ``Ready``
False with its reason and message. Conditions reported from elsewhere (``GatewayAccepted``, from
``gateway_api``; ``Autoscaling``, from the autoscaler) follow, with the same transition times.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tandem.api import (
    AutoscalingStatus,
    Condition,
    ConditionType,
    InferencePoolStatus,
    PlanStatus,
    RoleStatus,
    RouterStatus,
)

COMPONENTS = ("prefill", "decode", "router")
ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class WorkloadState:
    """What a Deployment (or LeaderWorkerSet) reports about its pods."""

    desired: int
    ready: int
    settled: bool  # the current spec is rolled out: every replica updated and ready, no old ones left


def workload_state(body: Mapping[str, Any]) -> WorkloadState:
    spec, status = body.get("spec", {}), body.get("status", {})
    desired = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas", 0))
    generation = body.get("metadata", {}).get("generation", 0)
    # LeaderWorkerSets report no observedGeneration; their counts are per group.
    observed = status.get("observedGeneration", generation)
    settled = (
        observed >= generation
        and int(status.get("updatedReplicas", 0)) == desired
        and int(status.get("replicas", 0)) == desired
        and ready == desired
    )
    return WorkloadState(desired=desired, ready=ready, settled=settled or desired == ready == 0)


@dataclass(frozen=True)
class Problem:
    """Why the pool does not run as asked. ``planned``: the plan itself is sound."""

    reason: str
    message: str
    planned: bool = False


@dataclass(frozen=True)
class Reported:
    """A condition shown as it is reported, besides the pool's own four (``GatewayAccepted``,
    ``Autoscaling``)."""

    type: ConditionType
    status: ConditionStatus
    reason: str
    message: str


def plan_summary(plan: PlanStatus) -> str:
    roles = []
    for name, role in (("prefill", plan.prefill), ("decode", plan.decode)):
        if role is not None:
            shape = f"TP{role.tensor_parallel}" + (
                f"xPP{role.pipeline_parallel}" if role.pipeline_parallel > 1 else ""
            )
            roles.append(f"{name} {role.replicas}x {shape} on {role.gpu_type}")
    summary = ", ".join(roles)
    if plan.prompt_tokens_threshold is not None:
        summary += f"; prompts from {plan.prompt_tokens_threshold} tokens are handed off"
    return summary


def _condition(
    kind: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    previous: Mapping[str, Condition],
    now: str,
) -> Condition:
    before = previous.get(kind)
    changed = before is None or before.status != status
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if changed or before is None else before.last_transition_time,
        observed_generation=generation,
    )


def _not_degraded(below: bool, serving: bool) -> str:
    if not below:
        return "AllReplicasReady"
    return "RollingOut" if serving else "NotServing"


def pool_status(
    *,
    generation: int,
    plan: PlanStatus | None,
    desired: Mapping[str, int] | None,
    observed: Mapping[str, WorkloadState],
    problem: Problem | None,
    endpoint: str | None,
    previous: InferencePoolStatus | None,
    shared_router: str | None = None,
    now: str,
    reported: Sequence[Reported] = (),
    autoscaling: AutoscalingStatus | None = None,
) -> InferencePoolStatus:
    """The status to write. ``desired``: replicas per component when the spec is deployable;
    ``shared_router``: the router the pool shares (``spec.router.shared``), if any."""
    wanted = dict(desired) if desired is not None else {c: s.desired for c, s in observed.items()}
    ready = {c: observed[c].ready if c in observed else 0 for c in wanted}
    settled = all(
        wanted[c] == 0 if c not in observed else observed[c].settled and observed[c].desired == wanted[c]
        for c in wanted
    )
    counts = ", ".join(f"{c} {ready[c]}/{wanted[c]}" for c in COMPONENTS if c in wanted) + " ready"
    serving = ready.get("router", 0) > 0 and ready.get("decode", 0) > 0
    below = any(ready[c] < wanted[c] for c in wanted)
    # Below what was asked before, too: a component whose desired count just rose (the
    # autoscaler's scale-up, on the same generation) is rolling out, not losing replicas.
    asked = {c: getattr(previous, c).replicas for c in COMPONENTS if previous and getattr(previous, c)}
    short = any(ready[c] < min(wanted[c], asked.get(c, wanted[c])) for c in wanted)

    before = {c.type: c for c in previous.conditions} if previous else {}
    # Ready (or already Degraded) on this generation: losing replicas now degrades it.
    was_ready = any(
        (c := before.get(kind)) is not None and c.status == "True" and c.observed_generation == generation
        for kind in (ConditionType.READY, ConditionType.DEGRADED)
    )

    def condition(kind: ConditionType, status: ConditionStatus, reason: str, message: str) -> Condition:
        return _condition(kind, status, reason, message, generation, before, now)

    if problem is not None:
        planned = (
            condition(ConditionType.PLANNED, "True", "Planned", plan_summary(plan))
            if problem.planned and plan is not None
            else condition(ConditionType.PLANNED, "False", problem.reason, problem.message)
        )
        conditions = [
            planned,
            condition(ConditionType.PROGRESSING, "False", problem.reason, problem.message),
            condition(ConditionType.READY, "False", problem.reason, problem.message),
            condition(ConditionType.DEGRADED, "False", problem.reason, problem.message),
        ]
    else:
        assert plan is not None, "a deployable pool has a plan"
        conditions = [
            condition(ConditionType.PLANNED, "True", "Planned", plan_summary(plan)),
            condition(ConditionType.PROGRESSING, "False", "RolloutComplete", counts)
            if settled
            else condition(ConditionType.PROGRESSING, "True", "RollingOut", counts),
            condition(ConditionType.READY, "True", "AllReplicasReady", counts)
            if settled
            else condition(ConditionType.READY, "False", "ReplicasNotReady", counts),
            condition(ConditionType.DEGRADED, "True", "ReplicasUnavailable", counts)
            if serving and short and was_ready
            else condition(ConditionType.DEGRADED, "False", _not_degraded(below, serving), counts),
        ]

    conditions += [condition(r.type, r.status, r.reason, r.message) for r in reported]

    def role(component: str) -> RoleStatus | None:
        if component not in wanted:
            return None
        return RoleStatus(
            replicas=wanted[component],
            ready_replicas=ready[component],
            ready=f"{ready[component]}/{wanted[component]}",
        )

    router = role("router")
    return InferencePoolStatus(
        observed_generation=generation,
        conditions=conditions,
        plan=plan if plan is not None else (previous.plan if previous else None),
        prefill=role("prefill"),
        decode=role("decode"),
        router=RouterStatus(**router.model_dump(), endpoint=endpoint, shared=shared_router)
        if router is not None
        else None,
        autoscaling=autoscaling,
    )
