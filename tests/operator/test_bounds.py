"""A pool's bounds: schema maxima for replicas and parallelism, and the GPU budget (spec.maxGpus and
the operator's --max-gpus-per-pool). Beyond them the pool is refused, naming the limit, and nothing
is created."""

from __future__ import annotations

from typing import Any

import pytest
from operator_decisions import OLD, pool_body, run

from tandem.api.crd import openapi_schema
from tandem.api.spec import MAX_REPLICAS, InferencePoolSpec
from tandem.operator.decide import Decision, decide
from tandem.operator.planning import catalog_planner
from tandem.operator.settings import Images

LIMITED = catalog_planner(max_gpus_per_pool=1)


def blocked(decision: Decision, reason: str) -> str:
    assert decision.objects is None and decision.desired is None, "children would be created"
    assert decision.problem is not None and decision.problem.reason == reason, decision.problem
    return decision.problem.message


def planned_gpus(body: dict[str, Any]) -> int:
    decision = run(body)
    assert decision.plan is not None and decision.problem is None
    return sum(role.gpus for role in (decision.plan.prefill, decision.plan.decode) if role)


def test_a_million_replicas_is_refused() -> None:
    """Before: accepted; the operator created Deployments of a million replicas (523 pods in 25 s)."""
    message = blocked(run(pool_body(decode__replicas=1_000_000)), "InvalidSpec")
    assert message.startswith("spec.decode.replicas: Input should be less than or equal to 1000")


@pytest.mark.parametrize(
    ("path", "limit"),
    [
        (("prefill", "replicas"), MAX_REPLICAS),
        (("decode", "replicas"), MAX_REPLICAS),
        (("router", "replicas"), MAX_REPLICAS),
        (("decode", "tensorParallel"), 16),
        (("decode", "pipelineParallel"), 64),
    ],
)
def test_the_crd_carries_the_maxima_so_the_api_server_refuses_them_too(
    path: tuple[str, str], limit: int
) -> None:
    schema = openapi_schema(InferencePoolSpec)
    assert schema["properties"][path[0]]["properties"][path[1]]["maximum"] == limit


def test_a_plan_beyond_spec_max_gpus_is_infeasible_naming_it() -> None:
    message = blocked(run(pool_body(maxGpus=1)), "Infeasible")
    assert "over the budget of 1 (spec.maxGpus)" in message


def test_a_plan_within_spec_max_gpus_deploys() -> None:
    gpus = planned_gpus(pool_body())
    decision = run(pool_body(maxGpus=gpus))
    assert decision.problem is None and decision.objects is not None


def test_the_operators_limit_caps_every_pool_and_is_named() -> None:
    decision = decide(pool_body(maxGpus=64), OLD, Images(), LIMITED)
    message = blocked(decision, "Infeasible")
    assert "over the budget of 1 (the operator's --max-gpus-per-pool)" in message


def test_pinned_replicas_beyond_the_budget_are_infeasible() -> None:
    message = blocked(run(pool_body(decode__replicas=5, maxGpus=4)), "Infeasible")
    assert "spec.maxGpus" in message and "over the budget of 4" in message


def test_pins_over_the_plan_are_held_to_the_budget() -> None:
    """Aggregated serving plans no prefill GPUs; pinned prefill replicas still take them."""
    body = pool_body(disaggregation__mode="Never")
    gpus = planned_gpus(body)
    message = blocked(
        run(pool_body(disaggregation__mode="Never", prefill__replicas=3, maxGpus=gpus)), "Infeasible"
    )
    assert message.startswith(f"spec.maxGpus: the pool needs {gpus + 3} GPUs (prefill 3 x 1, decode")
    assert message.endswith(f"over the budget of {gpus}")


def test_planned_replicas_beyond_the_maximum_are_infeasible() -> None:
    unlimited = catalog_planner(max_gpus_per_pool=10**7)
    body = pool_body(workload__requestsPerSecond=100_000)
    message = blocked(decide(body, OLD, Images(), unlimited), "Infeasible")
    assert "planned, over the maximum of 1000" in message and message.startswith("spec.")
