"""The planner as the autoscaler asks it: the simulator example re-planned for observed loads on
its own layout (replicas float, TP/PP stay), predictions at given replicas, and a recommendation
where the planner would choose another layout for the traffic."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from operator_memory_api import EXAMPLE

from tandem.api import InferencePoolSpec, TokenStats, WorkloadSpec
from tandem.api.lengths import most_p90
from tandem.operator.autoscale.decision import Replicas, Sizing, planner_load
from tandem.operator.autoscale.observation import Lengths, Observation
from tandem.operator.autoscale.replan import PoolPlans
from tandem.operator.layout import resolve_layout
from tandem.operator.planning import catalog_planner

PLANNER = catalog_planner()


def pool(**spec: Any) -> tuple[InferencePoolSpec, PoolPlans]:
    body = yaml.safe_load(EXAMPLE.read_text())["spec"]
    for section, values in spec.items():
        body[section] = {**body.get(section, {}), **values} if isinstance(values, dict) else values
    parsed = InferencePoolSpec.model_validate(body)
    plan = PLANNER(parsed)
    return parsed, PoolPlans(parsed, plan, resolve_layout(parsed, plan), PLANNER)


def load(spec: InferencePoolSpec, rps: float, **lengths: TokenStats) -> WorkloadSpec:
    return spec.workload.model_copy(update={"requests_per_second": rps, **lengths})


def test_the_declared_workload_sizes_as_the_plan_did() -> None:
    spec, plans = pool()
    plan = PLANNER(spec)
    assert plan.prefill is not None and plan.decode is not None
    sized = plans.size(spec.workload)
    assert isinstance(sized, Sizing) and sized.prefill is not None
    assert (sized.prefill.replicas, sized.decode.replicas) == (plan.prefill.replicas, plan.decode.replicas)
    assert plans.disaggregated and plans.gpus_per_replica == Replicas(1, 1)


def test_more_load_needs_more_replicas_on_the_same_layout() -> None:
    spec, plans = pool()
    needs = []
    for rps in (2, 8, 16, 40, 80):
        sized = plans.size(load(spec, rps))
        assert isinstance(sized, Sizing) and sized.prefill is not None
        needs.append((sized.prefill.replicas, sized.decode.replicas))
        # Each replica's capacity is the plan's: the count is what the rate needs of it.
        assert sized.prefill.replicas * sized.prefill.replica_rps >= rps
        assert sized.decode.replicas * sized.decode.replica_rps >= rps
    assert needs == sorted(needs) and needs[-1] > needs[0]


def test_an_aggregated_pool_sizes_no_prefill() -> None:
    spec, plans = pool(disaggregation={"mode": "Never"})
    sized = plans.size(load(spec, 30))
    assert isinstance(sized, Sizing) and sized.prefill is None and sized.decode.replicas > 1
    assert not plans.disaggregated


def test_a_load_beyond_the_gpu_budget_still_says_what_it_needs() -> None:
    """The budget is the decision's to apply: it fits both roles within it in proportion."""
    spec, plans = pool(maxGpus=2)
    sized = plans.size(load(spec, 200))
    assert isinstance(sized, Sizing) and sized.prefill is not None
    assert sized.prefill.replicas + sized.decode.replicas > 2
    assert plans.budget is not None and (plans.budget.gpus, plans.budget.source) == (2, "spec.maxGpus")


def test_predictions_are_the_plans_at_those_replicas_or_none_where_they_do_not_hold() -> None:
    spec, plans = pool()
    held = plans.predict(load(spec, 4), Replicas(1, 1))
    assert held is not None and held.ttft_ms is not None and held.itl_ms is not None
    assert held.ttft_ms <= spec.slo.ttft_ms and held.itl_ms <= spec.slo.itl_ms
    assert plans.predict(load(spec, 40), Replicas(1, 1)) is None  # one prefill replica serves ~13.5/s


def test_another_layout_for_the_traffic_is_recommended_never_applied() -> None:
    """Declared: 12000-token prompts, which take TP2 replicas; observed: 500-token prompts, which
    one GPU serves. The layout stays (sizing keeps TP2), the status says what the planner would do."""
    declared = {
        "requestsPerSecond": 2,
        "promptTokens": {"mean": 12000, "p90": 24000},
        "outputTokens": {"mean": 200},
    }
    spec, plans = pool(disaggregation={"mode": "Auto"}, workload=declared)
    short = load(spec, 1, prompt_tokens=TokenStats(mean=500, p90=900))
    sized = plans.size(short)
    assert isinstance(sized, Sizing) and plans.gpus_per_replica.decode == 2
    advice = plans.recommend(short)
    assert advice is not None and advice.decode is not None
    assert (advice.deployment, advice.decode.tensor_parallel) == ("Aggregated", 1)
    assert "1 GPU instead of the 2 GPUs the current layout needs" in advice.message


@pytest.mark.parametrize("rps", [1, 4, 16])
def test_the_pools_own_layout_is_no_recommendation(rps: float) -> None:
    spec, plans = pool()  # mode Always: the planner keeps the split whatever the traffic
    assert plans.recommend(load(spec, rps)) is None


def test_a_dp_layout_keeps_its_ranks_and_experts_when_replanned() -> None:
    """Qwen3-30B-A3B prefills 2,048-token prompts on DP2 x TP1 with EP at 20 requests/s. At 40/s the
    planner alone would take another layout (three DP1 replicas since its prefill moments cover the
    prompts' tail); on the pool's layout that is two DP2 replicas (before, with DP free, the
    autoscaler would have set replicas of a layout that does not run)."""
    spec, plans = pool(
        model={"name": "Qwen/Qwen3-30B-A3B"},
        workload={"requestsPerSecond": 20, "promptTokens": {"mean": 2048}},
        disaggregation={"kvTransfer": {"connector": "nixl"}, "mode": "Always"},
    )
    assert plans.gpus_per_replica.prefill == 2
    free = PLANNER(spec.model_copy(update={"workload": load(spec, 40)}))
    assert free.prefill is not None and free.prefill.data_parallel != 2
    sized = plans.size(load(spec, 40))
    assert isinstance(sized, Sizing) and sized.prefill is not None and sized.prefill.replicas == 2


def test_a_measured_tail_heavier_than_any_log_normal_is_planned_at_the_largest_p90() -> None:
    """Live traffic may have a p90 above 2.27 x its mean, which TokenStats refuses: the autoscaler
    plans for the heaviest log-normal instead of failing the pool's replan."""
    observed = Observation(requests_per_second=2, prompt_tokens=Lengths(mean=1000, p90=9000))
    load = planner_load(observed, WorkloadSpec())
    assert (load.prompt_tokens.mean, load.prompt_tokens.p90) == (1000, most_p90(1000))
