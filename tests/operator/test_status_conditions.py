"""Pool status from workload reports: ready counts, the four conditions, transition times."""

from __future__ import annotations

from typing import Any

from tandem.api import PlanStatus, RolePlanStatus
from tandem.operator.events import ChildChanges, pool_events
from tandem.operator.status import Problem, WorkloadState, pool_status, workload_state

PLAN = PlanStatus(
    feasible=True,
    recommended="Disaggregated",
    prefill=RolePlanStatus(gpu_type="H100-80GB", tensor_parallel=1, pipeline_parallel=1, replicas=2, gpus=2),
    decode=RolePlanStatus(gpu_type="H100-80GB", tensor_parallel=2, pipeline_parallel=1, replicas=1, gpus=2),
    prompt_tokens_threshold=512,
)
DESIRED = {"prefill": 2, "decode": 1, "router": 1}


def deployment(replicas: int, ready: int, updated: int | None = None, generation: int = 2) -> dict[str, Any]:
    updated = replicas if updated is None else updated
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": generation,
            "replicas": max(replicas, updated),
            "updatedReplicas": updated,
            "readyReplicas": ready,
        },
    }


def status_for(
    observed: dict[str, WorkloadState], problem: Problem | None = None, previous: Any = None
) -> Any:
    return pool_status(
        generation=4,
        plan=PLAN,
        desired=None if problem else DESIRED,
        observed=observed,
        problem=problem,
        endpoint="http://p-router.ns.svc.cluster.local:8000/v1",
        previous=previous,
        now="2026-01-01T00:00:00Z",
    )


def conditions(status: Any) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_workload_is_settled_only_when_its_current_spec_is_rolled_out_and_ready() -> None:
    assert workload_state(deployment(2, 2)).settled
    assert not workload_state(deployment(2, 1)).settled
    assert not workload_state(deployment(2, 2, updated=1)).settled  # old pods still serve
    behind = deployment(2, 2)
    behind["status"]["observedGeneration"] = 1
    assert not workload_state(behind).settled
    assert workload_state({"spec": {"replicas": 0}, "status": {}}).settled


def test_all_replicas_ready_makes_the_pool_ready() -> None:
    observed = {c: workload_state(deployment(n, n)) for c, n in DESIRED.items()}
    status = status_for(observed)
    assert conditions(status) == {
        "Planned": ("True", "Planned"),
        "Progressing": ("False", "RolloutComplete"),
        "Ready": ("True", "AllReplicasReady"),
        "Degraded": ("False", "AllReplicasReady"),
    }
    assert status.prefill.ready == "2/2" and status.decode.ready_replicas == 1
    assert status.router.endpoint.endswith(":8000/v1")
    assert status.observed_generation == 4 and status.plan == PLAN


PREFILL_BEHIND = {
    "prefill": workload_state(deployment(2, 1)),
    "decode": workload_state(deployment(1, 1)),
    "router": workload_state(deployment(1, 1)),
}


def test_a_ready_pool_losing_replicas_is_degraded_and_progressing() -> None:
    was_ready = status_for({c: workload_state(deployment(n, n)) for c, n in DESIRED.items()})
    status = status_for(PREFILL_BEHIND, previous=was_ready)
    found = conditions(status)
    assert found["Ready"] == ("False", "ReplicasNotReady")
    assert found["Progressing"] == ("True", "RollingOut")
    assert found["Degraded"] == ("True", "ReplicasUnavailable")
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert ready.message == "prefill 1/2, decode 1/1, router 1/1 ready"
    still = status_for(PREFILL_BEHIND, previous=status)
    assert conditions(still)["Degraded"] == ("True", "ReplicasUnavailable")


def test_a_first_rollout_that_already_serves_is_not_degraded() -> None:
    """Before: a new pool whose router and decoder were up before its prefillers (slower to load a
    model) reported Degraded=True and a Degraded Warning during its first rollout."""
    starting = status_for({})
    status = status_for(PREFILL_BEHIND, previous=starting)
    assert conditions(status)["Degraded"] == ("False", "RollingOut")
    assert conditions(status)["Progressing"] == ("True", "RollingOut")
    assert pool_events(starting, status, ChildChanges()) == []


def test_a_spec_change_rolling_out_is_not_degraded() -> None:
    ready_before = pool_status(
        generation=3,
        plan=PLAN,
        desired=DESIRED,
        observed={c: workload_state(deployment(n, n)) for c, n in DESIRED.items()},
        problem=None,
        endpoint=None,
        previous=None,
        now="2026-01-01T00:00:00Z",
    )
    rolling = status_for(PREFILL_BEHIND, previous=ready_before)  # generation 4
    assert conditions(rolling)["Degraded"] == ("False", "RollingOut")


def test_a_scale_up_on_the_same_generation_is_rolling_out_not_degraded() -> None:
    """The autoscaler raises prefill from 1 to 2 on a Ready pool: the new replica starting is no
    lost one. Before, the pool turned Degraded with a Warning Event at every scale-up."""
    one_prefill = {"prefill": 1, "decode": 1, "router": 1}
    ready_before = pool_status(
        generation=4,
        plan=PLAN,
        desired=one_prefill,
        observed={c: workload_state(deployment(n, n)) for c, n in one_prefill.items()},
        problem=None,
        endpoint=None,
        previous=None,
        now="2026-01-01T00:00:00Z",
    )
    scaling = status_for(PREFILL_BEHIND, previous=ready_before)  # desired prefill 2, 1 ready
    assert conditions(scaling)["Degraded"] == ("False", "RollingOut")
    assert conditions(scaling)["Progressing"] == ("True", "RollingOut")
    assert "Degraded" not in {event.reason for event in pool_events(ready_before, scaling, ChildChanges())}


def test_nothing_serving_yet_is_not_degraded() -> None:
    status = status_for({})
    assert conditions(status)["Degraded"] == ("False", "NotServing")
    assert status.decode.ready == "0/1"


def test_problem_turns_ready_false_with_its_reason_and_message() -> None:
    status = status_for({}, Problem("Infeasible", "spec.slo.itlMs: 5 ms is below the floor"))
    found = conditions(status)
    assert found["Planned"] == ("False", "Infeasible") and found["Ready"] == ("False", "Infeasible")
    assert all(c.message == "spec.slo.itlMs: 5 ms is below the floor" for c in status.conditions)
    assert status.prefill is None  # nothing deployed, nothing to count


def test_problem_after_planning_keeps_planned_true() -> None:
    status = status_for({}, Problem("LeaderWorkerSetMissing", "needs LWS", planned=True))
    assert conditions(status)["Planned"] == ("True", "Planned")
    assert conditions(status)["Ready"] == ("False", "LeaderWorkerSetMissing")


def test_transition_time_moves_only_when_a_condition_changes_status() -> None:
    first = status_for({})
    ready = {c: workload_state(deployment(n, n)) for c, n in DESIRED.items()}
    later = pool_status(
        generation=4,
        plan=PLAN,
        desired=DESIRED,
        observed=ready,
        problem=None,
        endpoint=None,
        previous=first,
        now="2026-01-01T00:05:00Z",
    )
    times = {c.type: c.last_transition_time for c in later.conditions}
    assert times["Planned"] == "2026-01-01T00:00:00Z"  # stayed True
    assert times["Ready"] == "2026-01-01T00:05:00Z"  # False -> True
