"""What a pool's settings impose on the plan: the GPU budget, LMCache's single pipeline stage, and
the engines' memory fraction (one value for the KV capacity and the engines' flag)."""

from __future__ import annotations

from typing import Any

import pytest

from tandem.api import DisaggregationMode, KvConnector
from tandem.planner import GpuBudget, PlanRequest, plan
from tandem.planner.calibration import VLLM_GPU_MEMORY_UTILIZATION, Calibration
from tandem.planner.connectors import LMCACHE_SINGLE_STAGE


def request(**changes: Any) -> PlanRequest:
    base: dict[str, Any] = {
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "prefill_gpus": ("H100-80GB",),
        "decode_gpus": ("H100-80GB",),
        "mode": DisaggregationMode.ALWAYS,
        "connector": KvConnector.LMCACHE,
    }
    return PlanRequest(**{**base, **changes})


def test_a_plan_within_its_budget_is_unchanged_and_records_it() -> None:
    free = plan(request())
    budget = GpuBudget(gpus=free.gpus, source="spec.maxGpus")
    bounded = plan(request(gpu_budget=budget))
    assert bounded.feasible and bounded.gpus == free.gpus and bounded.gpu_budget == budget


def test_a_plan_beyond_its_budget_is_infeasible_naming_the_source() -> None:
    free = plan(request())
    bounded = plan(request(gpu_budget=GpuBudget(gpus=free.gpus - 1, source="spec.maxGpus")))
    assert not bounded.feasible
    assert (
        bounded.reason
        == f"the pool needs {free.gpus} GPUs, over the budget of {free.gpus - 1} (spec.maxGpus)"
    )
    assert bounded.reason in bounded.rationale


def test_in_auto_mode_an_alternative_within_the_budget_is_deployed() -> None:
    free = plan(request(mode=DisaggregationMode.AUTO))
    assert free.disaggregated.feasible and free.aggregated.feasible
    smaller = min(free.disaggregated.gpus, free.aggregated.gpus)
    bounded = plan(request(mode=DisaggregationMode.AUTO, gpu_budget=GpuBudget(gpus=smaller, source="x")))
    assert bounded.feasible and bounded.gpus == smaller


def test_the_tightest_budget_wins() -> None:
    spec_budget, operator = GpuBudget(gpus=8, source="spec.maxGpus"), GpuBudget(gpus=4, source="operator")
    assert GpuBudget.tightest(spec_budget, operator) == operator
    assert GpuBudget.tightest(None, spec_budget) == spec_budget
    assert GpuBudget.tightest(None, None) is None


# Llama-3.1-405B in BF16 is about 756 GiB: more than one node of 8 x H100-80GB, so it needs pipeline
# stages (vLLM blog, "Announcing Llama 3.1 Support in vLLM": BF16 on H100 only across nodes).
def _405b(connector: KvConnector) -> PlanRequest:
    return request(model="meta-llama/Llama-3.1-405B", connector=connector, mode=DisaggregationMode.AUTO)


def test_lmcache_pools_are_never_planned_with_pipeline_stages_and_the_reason_says_why() -> None:
    nixl = plan(_405b(KvConnector.NIXL))
    assert nixl.decode is not None and nixl.decode.pipeline_parallel > 1  # the premise
    lmcache = plan(_405b(KvConnector.LMCACHE))
    roles = [r for d in (lmcache.disaggregated, lmcache.aggregated) for r in (d.prefill, d.decode) if r]
    assert all(role.pipeline_parallel == 1 for role in roles)
    assert not lmcache.feasible and lmcache.reason is not None
    assert LMCACHE_SINGLE_STAGE in lmcache.reason and LMCACHE_SINGLE_STAGE in lmcache.rationale


def test_aggregated_serving_runs_no_connector_so_lmcaches_one_stage_rule_does_not_bind_it() -> None:
    """Mode Never hands nothing off: the connector in use is none, whatever the request names
    (lmcache here). Before, a 405B aggregated pool was refused for needing pipeline stages."""
    never = plan(request(model="meta-llama/Llama-3.1-405B", mode=DisaggregationMode.NEVER))
    assert never.feasible and never.decode is not None and never.decode.pipeline_parallel > 1


def test_connector_none_is_refused_where_handoffs_may_happen() -> None:
    with pytest.raises(ValueError, match="connector none hands no KV off: it needs mode Never"):
        request(connector=KvConnector.NONE)
    aggregated = request(connector=KvConnector.NONE, mode=DisaggregationMode.NEVER)
    assert aggregated.layout_rules.single_stage is None


def test_a_pinned_pipeline_on_lmcache_is_refused_by_the_planner_too() -> None:
    pinned = plan(request(decode={"pipeline_parallel": 2}))
    assert not pinned.feasible and pinned.reason is not None
    assert f"pinned PP=2: {LMCACHE_SINGLE_STAGE}" in pinned.reason


def test_the_memory_fraction_defaults_to_vllms() -> None:
    """vLLM 0.33: CacheConfig.gpu_memory_utilization = Field(default=0.92) (vllm/config/cache.py:215).
    Before, the planner assumed 0.9 and the engines were told 0.9."""
    assert VLLM_GPU_MEMORY_UTILIZATION == 0.92
    assert Calibration.model_fields["gpu_memory_utilization"].default == 0.92
    planned = plan(request())
    assert planned.decode is not None and planned.decode.gpu_memory_utilization == 0.92


@pytest.mark.parametrize("fraction", [0.5, 0.8])
def test_a_requested_memory_fraction_sizes_the_kv_cache_and_is_reported(fraction: float) -> None:
    default, chosen = plan(request()), plan(request(gpu_memory_utilization=fraction))
    assert default.decode is not None and chosen.decode is not None and chosen.prefill is not None
    assert chosen.decode.gpu_memory_utilization == chosen.prefill.gpu_memory_utilization == fraction
    assert chosen.decode.kv_capacity_tokens < default.decode.kv_capacity_tokens
