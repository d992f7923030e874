"""Kubernetes Events on the pool for its major steps. Pure: which events, and their objects.

Only transitions make events (a new plan, children created, changed, restored or pruned, the pool
turning Ready or Degraded, a new problem, the autoscaler changing the replicas, recommending another
layout, or stopping for a conflict or missing metrics), so a pool that does not change posts none.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tandem.api import API_VERSION, KIND, Condition, ConditionType, InferencePoolStatus
from tandem.api.autoscaling import LayoutRecommendation
from tandem.operator.drift import Change
from tandem.operator.naming import MANAGED_BY
from tandem.operator.status import plan_summary

EventType = Literal["Normal", "Warning"]
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class PoolEvent:
    type: EventType
    reason: str
    message: str


@dataclass
class ChildChanges:
    """What one reconcile did to the children, as "Kind/name" lists."""

    applied: dict[Change, list[str]] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)

    def add(self, change: Change, child: str) -> None:
        self.applied.setdefault(change, []).append(child)

    def __bool__(self) -> bool:
        return bool(self.applied or self.pruned)


def _conditions(status: InferencePoolStatus | None) -> Mapping[str, Condition]:
    return {c.type: c for c in status.conditions} if status else {}


def _became(
    kind: ConditionType, value: str, before: Mapping[str, Condition], after: Mapping[str, Condition]
) -> bool:
    new = after.get(kind)
    old = before.get(kind)
    return new is not None and new.status == value and (old is None or old.status != value)


def pool_events(
    previous: InferencePoolStatus | None, current: InferencePoolStatus, changes: ChildChanges
) -> list[PoolEvent]:
    before, after = _conditions(previous), _conditions(current)
    events: list[PoolEvent] = []
    planned = after.get(ConditionType.PLANNED)
    if (
        planned is not None
        and planned.status == "True"
        and current.plan is not None
        and (
            previous is None
            or previous.plan != current.plan
            or _became(ConditionType.PLANNED, "True", before, after)
        )
    ):
        events.append(PoolEvent("Normal", "Planned", plan_summary(current.plan)))
    ready = after.get(ConditionType.READY)
    old_ready = before.get(ConditionType.READY)
    rollout_reasons = {"ReplicasNotReady", "AllReplicasReady"}
    if (
        ready is not None
        and ready.status == "False"
        and ready.reason not in rollout_reasons
        and (old_ready is None or old_ready.reason != ready.reason)
    ):
        events.append(PoolEvent("Warning", ready.reason, ready.message))
    for change, children in changes.applied.items():
        events.append(
            PoolEvent(
                "Normal", change.value.capitalize(), f"{change.value.capitalize()} {', '.join(children)}"
            )
        )
    if changes.pruned:
        events.append(PoolEvent("Normal", "Pruned", f"Deleted {', '.join(changes.pruned)}"))
    if _became(ConditionType.READY, "True", before, after) and ready is not None:
        events.append(PoolEvent("Normal", "Ready", ready.message))
    degraded = after.get(ConditionType.DEGRADED)
    if _became(ConditionType.DEGRADED, "True", before, after) and degraded is not None:
        events.append(PoolEvent("Warning", "Degraded", degraded.message))
    return events + _autoscaling_events(previous, current, before, after)


def _layout(recommendation: LayoutRecommendation | None) -> tuple[object, ...] | None:
    """What a recommendation recommends, whatever the replica counts (which follow the load)."""
    if recommendation is None:
        return None
    shapes = [
        (shape.gpu_type, shape.tensor_parallel, shape.pipeline_parallel) if shape else None
        for shape in (recommendation.prefill, recommendation.decode)
    ]
    return (recommendation.deployment, *shapes)


def _autoscaling_events(
    previous: InferencePoolStatus | None,
    current: InferencePoolStatus,
    before: Mapping[str, Condition],
    after: Mapping[str, Condition],
) -> list[PoolEvent]:
    events: list[PoolEvent] = []
    old = previous.autoscaling if previous else None
    new = current.autoscaling
    if old is not None and new is not None:
        if old.desired is not None and new.desired is not None and old.desired != new.desired:
            events.append(PoolEvent("Normal", "Scaled", new.last_decision or ""))
        if new.recommendation is not None and _layout(new.recommendation) != _layout(old.recommendation):
            events.append(PoolEvent("Normal", "LayoutRecommended", new.recommendation.message))
    state, was = after.get(ConditionType.AUTOSCALING), before.get(ConditionType.AUTOSCALING)
    if state is not None and state.status == "False" and (was is None or was.reason != state.reason):
        events.append(PoolEvent("Warning", state.reason, state.message))
    return events


def event_manifest(pool: Mapping[str, Any], event: PoolEvent, *, now: str, instance: str) -> dict[str, Any]:
    """A core/v1 Event about ``pool`` (its body as the API server returned it)."""
    meta = pool["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": event.type,
        "reason": event.reason,
        "message": event.message[:MAX_MESSAGE],
        "source": {"component": MANAGED_BY},
        "reportingComponent": MANAGED_BY,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
