"""Events mark transitions only: a pool that does not change posts none."""

from __future__ import annotations

from tandem.api import InferencePoolStatus, PlanStatus, RolePlanStatus
from tandem.api.autoscaling import AutoscalingStatus, LayoutRecommendation, ReplicaCounts, RoleShape
from tandem.operator.drift import Change
from tandem.operator.events import ChildChanges, PoolEvent, event_manifest, pool_events
from tandem.operator.status import Problem, WorkloadState, pool_status

PLAN = PlanStatus(
    feasible=True,
    decode=RolePlanStatus(gpu_type="H100-80GB", tensor_parallel=1, pipeline_parallel=1, replicas=1, gpus=1),
)
DESIRED = {"prefill": 0, "decode": 1, "router": 1}


def status(ready: int, problem: Problem | None = None, plan: PlanStatus = PLAN) -> object:
    observed = {
        c: WorkloadState(desired=n, ready=min(n, ready), settled=min(n, ready) == n)
        for c, n in DESIRED.items()
    }
    return pool_status(
        generation=1,
        plan=plan,
        desired=None if problem else DESIRED,
        observed={} if problem else observed,
        problem=problem,
        endpoint=None,
        previous=None,
        now="2026-01-01T00:00:00Z",
    )


def reasons(events: list[PoolEvent]) -> list[str]:
    return [e.reason for e in events]


def test_first_reconcile_reports_the_plan_and_the_children_it_created() -> None:
    changes = ChildChanges()
    changes.add(Change.CREATE, "Deployment/p-decode")
    changes.add(Change.CREATE, "Service/p-decode")
    events = pool_events(None, status(0), changes)  # type: ignore[arg-type]
    assert reasons(events) == ["Planned", "Created"]
    assert events[1].message == "Created Deployment/p-decode, Service/p-decode"


def test_an_unchanged_pool_posts_nothing() -> None:
    same = status(1)
    assert pool_events(same, same, ChildChanges()) == []  # type: ignore[arg-type]


def test_becoming_ready_and_repairs_are_reported() -> None:
    changes = ChildChanges()
    changes.add(Change.REPAIR, "Service/p-decode")
    events = pool_events(status(0), status(1), changes)  # type: ignore[arg-type]
    assert reasons(events) == ["Restored", "Ready"]


def test_a_new_problem_is_a_warning_once() -> None:
    infeasible = status(0, Problem("Infeasible", "too slow"))
    events = pool_events(status(0), infeasible, ChildChanges())  # type: ignore[arg-type]
    assert [(e.type, e.reason, e.message) for e in events] == [("Warning", "Infeasible", "too slow")]
    assert pool_events(infeasible, infeasible, ChildChanges()) == []  # type: ignore[arg-type]


def test_event_object_points_at_the_pool() -> None:
    pool = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}}
    event = event_manifest(
        pool, PoolEvent("Normal", "Ready", "x" * 5000), now="2026-01-01T00:00:00Z", instance="op-1"
    )
    assert event["involvedObject"] == {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "InferencePool",
        "name": "p",
        "namespace": "ns",
        "uid": "u1",
    }
    assert event["metadata"] == {"generateName": "p.", "namespace": "ns"}
    assert len(event["message"]) == 1024 and event["type"] == "Normal"


def scaled(
    desired: tuple[int, int], tensor_parallel: int = 1, recommended_replicas: int = 1
) -> InferencePoolStatus:
    recommendation = LayoutRecommendation(
        message=f"... decode {recommended_replicas}x TP{tensor_parallel} ...",
        deployment="Aggregated",
        decode=RoleShape(
            gpu_type="H100-80GB",
            tensor_parallel=tensor_parallel,
            pipeline_parallel=1,
            replicas=recommended_replicas,
        ),
    )
    autoscaling = AutoscalingStatus(
        desired=ReplicaCounts(prefill=desired[0], decode=desired[1]),
        last_decision=f"scaled to prefill {desired[0]}, decode {desired[1]}",
        recommendation=recommendation,
    )
    base = status(1)
    assert isinstance(base, InferencePoolStatus)
    return base.model_copy(update={"autoscaling": autoscaling})


def test_the_autoscaler_changing_replicas_is_one_scaled_event_with_its_decision() -> None:
    events = pool_events(scaled((1, 1)), scaled((2, 1)), ChildChanges())
    assert [(e.reason, e.message) for e in events] == [("Scaled", "scaled to prefill 2, decode 1")]
    assert pool_events(scaled((2, 1)), scaled((2, 1)), ChildChanges()) == []


def test_a_recommendation_is_an_event_when_its_layout_changes_not_its_replicas() -> None:
    """The recommended replicas follow the load; an Event each time they moved was noise."""
    assert pool_events(scaled((1, 1)), scaled((1, 1), recommended_replicas=3), ChildChanges()) == []
    events = pool_events(scaled((1, 1)), scaled((1, 1), tensor_parallel=2), ChildChanges())
    assert reasons(events) == ["LayoutRecommended"]
