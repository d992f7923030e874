"""The planner serves reused prefixes from a prefill replica's GPU cache, then LMCache's offload
tiers at their load time, and recomputes the rest (planner/prefix_reuse.py).

Figures the tests rest on: Llama-3.1-8B keeps 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes =
128 KiB of KV per token, so one GiB of a TP=1 tier holds 8192 tokens; the H100's host link is PCIe
Gen5 x16, 64 GB/s per direction (planner/data/gpus.yaml), at host_link_eff 0.8.
"""

from __future__ import annotations

from typing import Any

import pytest

from tandem.api import InferencePoolSpec
from tandem.planner import plan_pool
from tandem.planner.plan import PrefixReusePlan

WORKING_SET = 2_000_000  # distinct reused tokens, beyond one H100's KV cache
TOKENS_PER_GIB = 8192


def spec(
    offload: dict[str, Any] | None,
    *,
    working_set: int | None = WORKING_SET,
    model: str = "meta-llama/Llama-3.1-8B-Instruct",
    tp: int = 1,
) -> InferencePoolSpec:
    workload: dict[str, Any] = {
        "requestsPerSecond": 2,
        "promptTokens": {"mean": 16000},
        "outputTokens": {"mean": 100},
        "prefixReuseFraction": 0.9,
    }
    if working_set is not None:
        workload["prefixWorkingSetTokens"] = working_set
    lmcache = {"offload": offload} if offload else {}
    return InferencePoolSpec.model_validate(
        {
            "model": {"name": model},
            "accelerator": {"type": "H100-80GB"},
            "slo": {"ttftMs": 10000, "itlMs": 50},
            "workload": workload,
            "disaggregation": {"mode": "Always", "kvTransfer": {"lmcache": lmcache}},
            "prefill": {"tensorParallel": tp, "replicas": 2},
            "decode": {"tensorParallel": tp},
        }
    )


def reuse_of(pool: InferencePoolSpec) -> tuple[PrefixReusePlan, float]:
    planned = plan_pool(pool)
    assert planned.prefill is not None and planned.prefill.prefix_reuse is not None, planned.reason
    assert planned.prefill.predicted_ttft_ms is not None
    return planned.prefill.prefix_reuse, planned.prefill.predicted_ttft_ms


def test_a_long_reused_prefix_loads_from_the_cpu_tier_faster_than_it_recomputes() -> None:
    without, ttft_without = reuse_of(spec(None))
    tiered, ttft_tiered = reuse_of(spec({"cpu": {"sizeGiB": 256}}))
    assert tiered.cpu_share > 0.5 and without.cpu_share == 0
    assert tiered.recomputed_share < without.recomputed_share
    # A 14,400-token prefix: 1.8 GiB over ~51 GB/s is ~37 ms; recomputing it takes seconds.
    assert tiered.prefill_ms < without.prefill_ms < tiered.recompute_ms
    assert ttft_tiered < ttft_without


def test_the_tier_serves_what_its_capacity_reaches_of_the_working_set() -> None:
    small, _ = reuse_of(spec({"cpu": {"sizeGiB": 100}}))
    large, _ = reuse_of(spec({"cpu": {"sizeGiB": 200}}))
    for tier, gib in ((small, 100), (large, 200)):
        reach = min(1.0, gib * TOKENS_PER_GIB / WORKING_SET)
        assert tier.gpu_share + tier.cpu_share == pytest.approx(reach)
        assert tier.recomputed_share == pytest.approx(1 - reach)
    assert small.gpu_share == large.gpu_share
    assert large.cpu_share > small.cpu_share


def test_the_disk_tier_pays_only_where_recomputing_costs_more_than_reading() -> None:
    """70B at TP=4: a GPU's share of a token's KV (80 KiB) reads from NVMe faster than the GPU
    recomputes it. 8B at TP=1: the whole 128 KiB per GPU at ~3 GB/s is slower than the H100's
    prefill, so the plan says the disk tier costs TTFT there."""
    tiers = ({"cpu": {"sizeGiB": 100}}, {"cpu": {"sizeGiB": 100}, "disk": {"sizeGiB": 1000}})
    cpu_only, with_disk = (
        reuse_of(spec(offload, model="meta-llama/Llama-3.1-70B-Instruct", tp=4))[0] for offload in tiers
    )
    assert with_disk.cpu_share == pytest.approx(cpu_only.cpu_share)
    assert with_disk.recomputed_share == 0 and with_disk.disk_share == pytest.approx(
        cpu_only.recomputed_share
    )
    assert with_disk.prefill_ms < cpu_only.prefill_ms
    small_cpu, small_disk = (reuse_of(spec(offload))[0] for offload in tiers)
    assert small_disk.prefill_ms > small_cpu.prefill_ms


def test_without_a_working_set_every_reused_token_is_a_gpu_hit() -> None:
    planned = plan_pool(spec({"cpu": {"sizeGiB": 100}}, working_set=None))
    assert planned.prefill is not None and planned.prefill.prefix_reuse is None
    same = plan_pool(spec(None, working_set=None))
    assert planned.prefill == same.prefill  # the tiers change nothing the plan assumed
