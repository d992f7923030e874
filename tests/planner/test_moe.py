"""MoE layouts: data-parallel attention and expert parallelism in the planner (issue #16).

Facts relied on, from vLLM 0.33.0 (the vllm 0.33.0 wheel's vllm/):
- model_executor/layers/fused_moe/config.py, `FusedMoEParallelConfig.make`: with DP the MoE layers
  shard over DP x TP ("flatten_tp_across_dp"); with --enable-expert-parallel each GPU holds whole
  experts, ep_size = DP x TP.
- config/parallel.py, `use_all2all`: DP > 1 dispatches and combines tokens between ranks.
- config/model.py `get_num_kv_heads` is 1 for MLA: the latent is replicated on every TP rank, so
  TP does not shrink an MLA cache, while each DP rank keeps its own cache for its own sequences.
"""

from __future__ import annotations

import pytest

from tandem.api import DisaggregationMode, InferencePoolSpec, KvConnector, SloSpec, TokenStats, WorkloadSpec
from tandem.planner import Calibration, GpuBudget, PlanRequest, cost, load_calibration, load_catalog, plan
from tandem.planner.connectors import LMCACHE_NO_DATA_PARALLEL
from tandem.planner.layouts import Layout, candidate_layouts
from tandem.planner.moe import ALL2ALL_BACKENDS, ExpertCost, imbalance
from tandem.planner.request import RolePins

CATALOG = load_catalog()
H200 = CATALOG.gpu("H200-141GB")
CAL = load_calibration(H200)
DEEPSEEK = CATALOG.model("deepseek-ai/DeepSeek-V3")
QWEN3_30B = CATALOG.model("Qwen/Qwen3-30B-A3B")


def _deepseek(rps: float, **update: object) -> PlanRequest:
    """DeepSeek-V3 on H200 nodes, decode-heavy: 1000-token prompts, 2000-token answers."""
    request = PlanRequest(
        model="deepseek-ai/DeepSeek-V3",
        prefill_gpus=(H200.name,),
        decode_gpus=(H200.name,),
        mode=DisaggregationMode.ALWAYS,
        slo=SloSpec(ttft_ms=5000, itl_ms=50),
        workload=WorkloadSpec(
            requests_per_second=rps, prompt_tokens=TokenStats(mean=1000), output_tokens=TokenStats(mean=2000)
        ),
    )
    return request.model_copy(update=update)


def test_deepseek_v3_on_16_h200_decodes_expert_parallel_and_says_why() -> None:
    result = plan(_deepseek(10, gpu_budget=GpuBudget(gpus=32, source="test")))
    assert result.feasible, result.reason
    decode = result.decode
    assert decode is not None
    assert decode.data_parallel * decode.tensor_parallel == 16 and decode.replicas == 1
    assert decode.expert_parallel and decode.data_parallel > 1 and decode.nodes == 2
    assert decode.all2all_backend == "deepep_low_latency"
    assert decode.data_parallel_local == 8 // decode.tensor_parallel
    # The explanation: the chosen layout, the MLA cache per DP rank, and the TP-only layout it beat.
    assert (
        f"Decode runs 1 x H200-141GB TP={decode.tensor_parallel} DP={decode.data_parallel}"
        in result.rationale
    )
    assert "MLA latent" in result.rationale
    assert "the best tensor-parallel layout, " in result.rationale
    tp_only = plan(_deepseek(10, expert_parallel=False))
    assert tp_only.decode is not None and tp_only.decode.gpus > decode.gpus


def test_a_small_moe_on_one_gpu_stays_tp1() -> None:
    request = PlanRequest(
        model="Qwen/Qwen3-30B-A3B",
        prefill_gpus=(H200.name,),
        decode_gpus=(H200.name,),
        slo=SloSpec(ttft_ms=2000, itl_ms=50),
        workload=WorkloadSpec(
            requests_per_second=1, prompt_tokens=TokenStats(mean=1000), output_tokens=TokenStats(mean=200)
        ),
    )
    result = plan(request)
    assert result.feasible and result.decode is not None and result.gpus == 1
    assert (result.decode.tensor_parallel, result.decode.data_parallel) == (1, 1)
    assert not result.decode.expert_parallel and result.decode.all2all_backend is None
    assert "stays tensor-parallel (H200-141GB TP=1)" in result.rationale


def test_gpus_grow_monotonically_with_the_rate() -> None:
    gpus = []
    for rps in (1, 2, 5, 10, 20, 40):
        result = plan(_deepseek(rps))
        assert result.feasible, (rps, result.reason)
        gpus.append(result.gpus)
    assert gpus == sorted(gpus)
    assert gpus[-1] > gpus[0]


def test_itl_below_the_floor_of_every_layout_is_infeasible_with_the_floor() -> None:
    result = plan(_deepseek(5, slo=SloSpec(ttft_ms=5000, itl_ms=3)))
    assert not result.feasible
    assert result.reason is not None and "ITL target 3 ms is below the" in result.reason
    assert "floor of one decode step for deepseek-ai/DeepSeek-V3" in result.reason


def test_over_the_budget_is_infeasible_with_the_budget() -> None:
    result = plan(_deepseek(40, gpu_budget=GpuBudget(gpus=16, source="spec.maxGpus")))
    assert not result.feasible
    assert result.reason is not None and "over the budget of 16 (spec.maxGpus)" in result.reason


def test_lmcache_pools_get_no_data_parallel_layouts() -> None:
    layouts, _ = candidate_layouts(
        DEEPSEEK, H200, CAL, 8, RolePins(), 4000, expert_parallel=LMCACHE_NO_DATA_PARALLEL
    )
    assert layouts and all(layout.dp == 1 and not layout.ep for layout in layouts)
    result = plan(_deepseek(5, connector=KvConnector.LMCACHE))
    assert result.decode is not None and result.decode.data_parallel == 1


@pytest.mark.parametrize(("connector", "wide"), [("nixl", True), ("lmcache", False)])
def test_pool_specs_plan_dp_and_ep_where_their_connector_takes_dp_ranks(connector: str, wide: bool) -> None:
    """PlanRequest.from_pool_spec searches DP/EP layouts (the operator renders them), except for the
    connectors whose layout rules refuse DP ranks (LMCache: LMCACHE_NO_DATA_PARALLEL)."""
    spec = InferencePoolSpec.model_validate(
        {
            "model": {"name": "deepseek-ai/DeepSeek-V3"},
            "accelerator": {"type": "H200-141GB"},
            "disaggregation": {"mode": "Always", "kvTransfer": {"connector": connector}},
            "workload": {
                "requestsPerSecond": 10,
                "promptTokens": {"mean": 1000},
                "outputTokens": {"mean": 2000},
            },
            "slo": {"ttftMs": 5000, "itlMs": 50},
            "maxGpus": 32,
        }
    )
    request = PlanRequest.from_pool_spec(spec)
    assert (request.no_expert_parallel is None) is wide
    result = plan(request)
    if wide:  # 16 GPUs of DP x TP with EP (as in the test above); TP-only LMCache needs 64, over budget
        assert result.feasible and result.decode is not None, result.reason
        assert result.decode.data_parallel > 1 and result.decode.expert_parallel
    sized = (result.disaggregated.prefill, result.disaggregated.decode)
    assert wide or all(role is None or role.data_parallel == 1 for role in sized)


def test_candidates_cover_tp_only_ep_and_hybrids_within_the_node_limit() -> None:
    layouts, reason = candidate_layouts(DEEPSEEK, H200, CAL, 8, RolePins(), 4000)
    assert reason is None
    shapes = {(x.tp, x.dp, x.ep, x.all2all) for x in layouts}
    assert (8, 1, False, None) in shapes  # TP only
    assert (8, 1, True, None) in shapes  # EP over the TP group
    assert (1, 16, True, "deepep_low_latency") in shapes  # DP attention, wide EP
    assert (2, 4, True, "deepep_high_throughput") in shapes  # hybrid DP x TP
    assert (1, 8, False, "allgather_reducescatter") in shapes  # DP, TP-sliced experts, one node
    assert max(x.gpus for x in layouts) == 32  # MAX_REPLICA_NODES nodes of 8
    assert all(DEEPSEEK.num_experts % x.gpus == 0 for x in layouts if x.ep)
    capped, _ = candidate_layouts(DEEPSEEK, H200, CAL, 8, RolePins(), 4000, max_gpus=16)
    assert max(x.gpus for x in capped) == 16


def test_dense_models_get_no_data_parallel_layouts() -> None:
    layouts, _ = candidate_layouts(CATALOG.model("meta-llama/Llama-3.1-70B"), H200, CAL, 8, RolePins(), 4000)
    assert all(x.dp == 1 and not x.ep for x in layouts)


def test_mla_kv_per_dp_rank_is_not_split_by_tp() -> None:
    """DP 8 x TP 1 keeps eight MLA caches where TP 8 keeps one copied on every GPU."""
    tp8 = Layout(H200, 8, 1, CAL).kv_capacity_tokens(DEEPSEEK)
    dp8 = Layout(H200, 1, 1, CAL, 8, True, "deepep_low_latency").kv_capacity_tokens(DEEPSEEK)
    assert 8 * dp8 > 4 * tp8
    # The routed experts spread over all eight GPUs either way; attention weights replicate per rank.
    assert cost.weight_bytes_per_gpu(DEEPSEEK, 1, 1, 8) > cost.weight_bytes_per_gpu(DEEPSEEK, 8, 1)
    experts_per_gpu = cost.weight_bytes_per_gpu(DEEPSEEK, 1, 1, 8) - cost.weight_bytes_per_gpu(
        DEEPSEEK, 1, 1, 1
    )
    assert experts_per_gpu == pytest.approx(-7 / 8 * (DEEPSEEK.weight_bytes() - _dense_bytes()), rel=1e-9)


def _dense_bytes() -> float:
    return DEEPSEEK.weight_bytes() - DEEPSEEK.routed_expert_params * 1.0  # FP8 experts


def test_expert_parallel_waits_on_the_busiest_gpu_and_tp_slicing_does_not() -> None:
    assert imbalance(8, 1, CAL.expert_skew) == 1.0
    small, large = imbalance(8, 16, CAL.expert_skew), imbalance(8000, 16, CAL.expert_skew)
    assert small > large > CAL.expert_skew * 0.999
    skewed = CAL.model_copy(update={"expert_skew": 2 * CAL.expert_skew})

    def pass_ms(ep: bool, calibration: Calibration) -> float:
        experts = ExpertCost(DEEPSEEK, H200, calibration, tp=8, dp=1, ep=ep, backend=None, gpus_per_node=8)
        return experts.pass_ms(16384)  # compute-bound: the FLOPs decide

    assert pass_ms(True, skewed) > 1.5 * pass_ms(True, CAL)
    assert pass_ms(False, skewed) == pass_ms(False, CAL)


def test_all_to_all_crosses_the_node_network_only_beyond_one_node() -> None:
    low_latency = ALL2ALL_BACKENDS["deepep_low_latency"]
    one_node = ExpertCost(DEEPSEEK, H200, CAL, tp=1, dp=8, ep=True, backend=low_latency, gpus_per_node=8)
    two_nodes = ExpertCost(DEEPSEEK, H200, CAL, tp=1, dp=16, ep=True, backend=low_latency, gpus_per_node=8)
    assert 0 < one_node.all_to_all_ms(128) < two_nodes.all_to_all_ms(128)
    no_dp = ExpertCost(DEEPSEEK, H200, CAL, tp=8, dp=1, ep=True, backend=None, gpus_per_node=8)
    assert no_dp.all_to_all_ms(128) == 0.0


def test_dp_engine_timing_and_limits_are_per_rank() -> None:
    result = plan(_deepseek(10, gpu_budget=GpuBudget(gpus=32, source="test")))
    decode = result.decode
    assert decode is not None and decode.data_parallel > 1
    timing = decode.engine_timing
    assert timing.max_num_seqs == decode.max_batch
    assert timing.kv_capacity_tokens == decode.kv_capacity_tokens
    # The per-rank step at its batch is what the planner predicts for the ITL.
    step = timing.decode_step_base_ms + timing.decode_ms_per_seq * decode.max_batch
    assert step < 2 * SloSpec(ttft_ms=5000, itl_ms=50).itl_ms


def test_pinned_data_and_expert_parallelism_are_kept_or_refused_with_the_reason() -> None:
    pinned = plan(_deepseek(10, decode=RolePins(data_parallel=8, expert_parallel=True)))
    assert pinned.decode is not None and (pinned.decode.data_parallel, pinned.decode.expert_parallel) == (
        8,
        True,
    )
    assert {"dataParallel", "expertParallel"} <= set(pinned.decode.pinned)
    lmcache = plan(_deepseek(10, connector=KvConnector.LMCACHE, decode=RolePins(data_parallel=2)))
    assert not lmcache.feasible and lmcache.reason is not None
    assert f"pinned DP=2: {LMCACHE_NO_DATA_PARALLEL}" in lmcache.reason
    dense = plan(
        _deepseek(10, model="meta-llama/Llama-3.1-8B-Instruct", decode=RolePins(expert_parallel=True))
    )
    assert not dense.feasible and dense.reason is not None and "is not an MoE model" in dense.reason
