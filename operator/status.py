"""The pool's status, computed from what was decided and what the workloads report. Pure.

Conditions: ``Planned`` (a feasible plan for a valid spec), ``Progressing`` (a rollout under way),
``Ready`` (every component has its desired replicas ready on the current spec) and ``Degraded``
(serving, but some component below its desired replicas). A problem (invalid spec, infeasible plan,
missing cluster capability, failed apply) turns ``Ready`` False with its reason and message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tandem.api import Condition, ConditionType, InferencePoolStatus, PlanStatus, RoleStatus, RouterStatus

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


def pool_status(
    *,
    generation: int,
    plan: PlanStatus | None,
    desired: Mapping[str, int] | None,
    observed: Mapping[str, WorkloadState],
    problem: Problem | None,
    endpoint: str | None,
    previous: InferencePoolStatus | None,
    now: str,
) -> InferencePoolStatus:
    """The status to write. ``desired``: replicas per component when the spec is deployable."""
    wanted = dict(desired) if desired is not None else {c: s.desired for c, s in observed.items()}
    ready = {c: observed[c].ready if c in observed else 0 for c in wanted}
    settled = all(
        wanted[c] == 0 if c not in observed else observed[c].settled and observed[c].desired == wanted[c]
        for c in wanted
    )
    counts = ", ".join(f"{c} {ready[c]}/{wanted[c]}" for c in COMPONENTS if c in wanted) + " ready"
    serving = ready.get("router", 0) > 0 and ready.get("decode", 0) > 0
    below = any(ready[c] < wanted[c] for c in wanted)

    before = {c.type: c for c in previous.conditions} if previous else {}

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
            if serving and below
            else condition(
                ConditionType.DEGRADED, "False", "AllReplicasReady" if not below else "NotServing", counts
            ),
        ]

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
        router=RouterStatus(**router.model_dump(), endpoint=endpoint) if router is not None else None,
    )
