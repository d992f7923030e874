"""Planner predictions against published measurements and deployments.

Each figure below is copied from the source cited next to it. H100 runs with the calibration fitted
to PyTorch layer timings (planner/data/calibration/H100-80GB.yaml, benchmarks/calibration/), the
other GPUs with their class defaults; the engines here differ from those timings, so the tolerances
are wide and stated per block.
"""

from __future__ import annotations

import math

import pytest

from tandem.api import DisaggregationMode, SloSpec, TokenStats, WorkloadSpec
from tandem.api.spec import Dtype
from tandem.planner import PlanRequest, RolePins, cost, load_calibration, load_catalog, plan
from tandem.planner.model import KvCacheDtype

CATALOG = load_catalog()
GIB = 2**30

# --- 1. vLLM's memory accounting -----------------------------------------------------------------
# vLLM issue #10517 (https://github.com/vllm-project/vllm/issues/10517), comment of 2024-12-02:
# meta-llama/Llama-3.1-8B-Instruct on an RTX 3090, vLLM V0, gpu_memory_utilization 0.90,
# total_gpu_memory=23.58GiB, "Loading model weights took 14.9888 GB";
# max_model_len 20000 -> "# GPU blocks: 1952", max_model_len 29000 -> "# GPU blocks: 1478"
# (16-token blocks; V0 profiles a forward pass of max_model_len tokens).
RTX_3090_TOTAL_GIB = 23.58
MEASURED_MEMORY_FRACTION = 0.90
MEASURED_WEIGHTS_GIB = 14.9888
MEASURED_KV_TOKENS = {20000: 1952 * 16, 29000: 1478 * 16}
KV_TOLERANCE = 0.10


def test_weights_match_vllm_to_one_percent() -> None:
    model = CATALOG.model("meta-llama/Llama-3.1-8B-Instruct")
    assert model.weight_bytes() / GIB == pytest.approx(MEASURED_WEIGHTS_GIB, rel=0.01)


@pytest.mark.parametrize(("batched_tokens", "measured"), sorted(MEASURED_KV_TOKENS.items()))
def test_kv_capacity_matches_vllm_within_ten_percent(batched_tokens: int, measured: int) -> None:
    model = CATALOG.model("meta-llama/Llama-3.1-8B-Instruct")
    # A 24 GB GDDR6 card: the A10G entry with the 3090's memory (only the memory enters here).
    gpu = CATALOG.gpu("A10G").model_copy(update={"name": "RTX-3090", "memory_gib": RTX_3090_TOTAL_GIB})
    calibration = load_calibration(gpu).model_copy(
        update={"gpu_memory_utilization": MEASURED_MEMORY_FRACTION}
    )
    predicted = cost.kv_capacity_tokens(model, gpu, 1, 1, calibration, batched_tokens)
    assert predicted == pytest.approx(measured, rel=KV_TOLERANCE)


# --- 2. Published deployments: the smallest replica the planner chooses -----------------------
# GPUs of one replica at low load (aggregated serving, so one layout is chosen per case).
DEPLOYMENTS = [
    # SGLang, "DeepSeek V3/V3.1/R1 Usage" (https://docs.sglang.io/docs/basic_usage/deepseek_v3.md):
    # FP8 (the published checkpoint) on 8 x H200, or 2 x 8 x H100; BF16 on 2 x 8 x H200 or 4 x 8 x H100.
    ("deepseek-ai/DeepSeek-V3", Dtype.AUTO, "H200-141GB", 8, 8),
    ("deepseek-ai/DeepSeek-V3", Dtype.AUTO, "H100-80GB", 9, 16),
    ("deepseek-ai/DeepSeek-V3", Dtype.BFLOAT16, "H200-141GB", 9, 16),
    ("deepseek-ai/DeepSeek-V3", Dtype.BFLOAT16, "H100-80GB", 17, 32),
    # vLLM blog, "Announcing Llama 3.1 Support in vLLM" (https://blog.vllm.ai/2024/07/23/llama31.html):
    # 405B FP8 on one 8 x H100 or 8 x A100 machine; BF16 on one 8 x H200 machine; BF16 on H100 only
    # across nodes (pipeline parallelism).
    ("meta-llama/Llama-3.1-405B-Instruct", Dtype.FP8, "H100-80GB", 8, 8),
    ("meta-llama/Llama-3.1-405B-Instruct", Dtype.FP8, "A100-80GB", 8, 8),
    ("meta-llama/Llama-3.1-405B-Instruct", Dtype.BFLOAT16, "H200-141GB", 8, 8),
    ("meta-llama/Llama-3.1-405B-Instruct", Dtype.BFLOAT16, "H100-80GB", 9, 24),
    # OpenAI, gpt-oss model card (2025-08-05): gpt-oss-120b "runs within 80GB of memory", a single
    # H100.
    ("openai/gpt-oss-120b", Dtype.AUTO, "H100-80GB", 1, 1),
    # vLLM blog, "vLLM v0.6.0: 2.7x Throughput Improvement" (https://blog.vllm.ai/2024/09/05/perf-update.html):
    # Llama 3 70B served on 4 x H100 (so TP=4 holds it; TP=2 also fits with a small KV cache).
    ("meta-llama/Llama-3.1-70B-Instruct", Dtype.AUTO, "H100-80GB", 2, 4),
]


@pytest.mark.parametrize(("model", "dtype", "gpu", "fewest", "most"), DEPLOYMENTS)
def test_replica_size_matches_published_deployments(
    model: str, dtype: Dtype, gpu: str, fewest: int, most: int
) -> None:
    request = PlanRequest(
        model=model,
        dtype=dtype,
        prefill_gpus=(gpu,),
        decode_gpus=(gpu,),
        mode=DisaggregationMode.NEVER,
        slo=SloSpec(ttft_ms=30_000, itl_ms=500),
        workload=WorkloadSpec(
            requests_per_second=0.1, prompt_tokens=TokenStats(mean=1000), output_tokens=TokenStats(mean=200)
        ),
    )
    result = plan(request)
    assert result.feasible and result.decode, result.reason
    replica = result.decode.tensor_parallel * result.decode.pipeline_parallel
    assert fewest <= replica <= most


# --- 3. Throughput at saturation ----------------------------------------------------------------
# TensorRT-LLM, "Performance Overview", throughput tables (Total Output Throughput, tokens/s; H100 SXM
# 80GB, FP8 ModelOpt checkpoints, KV cache FP8, kv_cache_free_gpu_mem_fraction 0.95, fixed-length
# requests; https://github.com/NVIDIA/TensorRT-LLM/blob/main/docs/source/performance/perf-overview.md).
# (model, TP, input tokens, output tokens) -> published output tokens/s. Llama 3.3 70B has the
# Llama 3.1 70B shape.
TRTLLM_H100_FP8 = {
    ("meta-llama/Llama-3.1-8B", 1, 128, 128): 28_312,
    ("meta-llama/Llama-3.1-8B", 1, 128, 2048): 22_714,
    ("meta-llama/Llama-3.1-8B", 1, 500, 2000): 17_660,
    ("meta-llama/Llama-3.1-8B", 1, 1000, 1000): 15_220,
    ("meta-llama/Llama-3.1-8B", 1, 2048, 128): 3_450,
    ("meta-llama/Llama-3.1-8B", 1, 2048, 2048): 9_305,
    ("meta-llama/Llama-3.1-8B", 1, 5000, 500): 3_459,
    ("meta-llama/Llama-3.1-8B", 1, 20000, 2000): 1_351,
    ("meta-llama/Llama-3.3-70B-Instruct", 2, 128, 128): 6_378,
    ("meta-llama/Llama-3.3-70B-Instruct", 2, 128, 2048): 6_651,
    ("meta-llama/Llama-3.3-70B-Instruct", 2, 500, 2000): 5_222,
    ("meta-llama/Llama-3.3-70B-Instruct", 2, 1000, 1000): 4_205,
    ("meta-llama/Llama-3.3-70B-Instruct", 2, 2048, 128): 762,
    ("meta-llama/Llama-3.3-70B-Instruct", 2, 2048, 2048): 3_082,
    ("meta-llama/Llama-3.3-70B-Instruct", 2, 5000, 500): 898,
    ("meta-llama/Llama-3.3-70B-Instruct", 2, 20000, 2000): 437,
    ("meta-llama/Llama-3.1-405B", 8, 128, 128): 3_627,
    ("meta-llama/Llama-3.1-405B", 8, 1000, 1000): 2_919,
    ("meta-llama/Llama-3.1-405B", 8, 2048, 128): 453,
    ("meta-llama/Llama-3.1-405B", 8, 2048, 2048): 2_296,
    ("meta-llama/Llama-3.1-405B", 8, 5000, 500): 610,
}
# Another engine, FP8, against a calibration from BF16 PyTorch layer timings: each point within a
# factor 2 of the published figure, the geometric mean of the ratios within 25 % of 1. (Observed
# with the H100 fit: 1.03 to 1.46, geometric mean 1.21; with the class defaults 0.51 to 1.49, mean
# 1.02. Reading the KV cache at its own bandwidth share, not the weights' batch curve, lifts the 8B
# runs to 1.14-1.22 (0.77-1.01 when mbu(B) slowed the KV reads too); the 70B TP2 runs were high
# already, 1.06-1.49 with the defaults, and are 1.16-1.46.)
POINT_RANGE = (0.5, 2.0)
MEAN_RANGE = (0.8, 1.25)


def _saturated_output_tokens_per_s(model: str, tp: int, prompt: int, output: int) -> float:
    h100 = CATALOG.gpu("H100-80GB")
    calibration = load_calibration(h100).model_copy(update={"gpu_memory_utilization": 0.95})
    kv_dtype: KvCacheDtype = "fp8"
    request = PlanRequest(
        model=model,
        dtype=Dtype.FP8,
        kv_cache_dtype=kv_dtype,
        prefill_gpus=(h100.name,),
        decode_gpus=(h100.name,),
        mode=DisaggregationMode.NEVER,
        # Throughput runs have no latency targets: an hour of TTFT, five seconds per token.
        slo=SloSpec(ttft_ms=3_600_000, itl_ms=5_000),
        workload=WorkloadSpec(
            requests_per_second=0.01,
            prompt_tokens=TokenStats(mean=prompt),
            output_tokens=TokenStats(mean=output),
        ),
        decode=RolePins(tensor_parallel=tp, replicas=1),
        calibrations={h100.name: calibration},
    )
    replica = plan(request).aggregated.decode
    assert replica is not None
    return replica.max_requests_per_second * output


def test_saturated_throughput_matches_trtllm_published_figures() -> None:
    ratios = {
        key: _saturated_output_tokens_per_s(*key) / published for key, published in TRTLLM_H100_FP8.items()
    }
    low, high = POINT_RANGE
    outside = {key: round(r, 2) for key, r in ratios.items() if not low <= r <= high}
    assert not outside, outside
    mean = math.exp(sum(math.log(r) for r in ratios.values()) / len(ratios))
    assert MEAN_RANGE[0] <= mean <= MEAN_RANGE[1], mean
