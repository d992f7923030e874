"""The cost model's physics: memory fit, KV bytes, prefill and decode times, handoffs, calibration,
and the engine timing the simulator receives."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.planner import cost, kv_cache, load_calibration, load_catalog
from tandem.planner.calibration import Calibration
from tandem.planner.errors import CalibrationError
from tandem.planner.layouts import Layout, tensor_parallel_sizes, tp_invalid_reason
from tandem.planner.moe import touched_share
from tandem.planner.timing import decode_coefficients, prefill_coefficients

CATALOG = load_catalog()
H100 = CATALOG.gpu("H100-80GB")
CAL = load_calibration(H100)
LLAMA_8B = CATALOG.model("meta-llama/Llama-3.1-8B")
LLAMA_70B = CATALOG.model("meta-llama/Llama-3.1-70B")
LLAMA_405B = CATALOG.model("meta-llama/Llama-3.1-405B")
DEEPSEEK = CATALOG.model("deepseek-ai/DeepSeek-V3")
KIB = 1024


def test_kv_per_token_is_128_kib_for_8b_and_320_kib_for_70b_in_bf16() -> None:
    assert LLAMA_8B.kv_bytes_per_token() == 128 * KIB
    assert LLAMA_70B.kv_bytes_per_token() == 320 * KIB


def test_8b_bf16_fits_one_h100_with_room_for_kv() -> None:
    # vLLM reports about 447k tokens for this setup; a third of that is plenty of room.
    assert cost.kv_capacity_tokens(LLAMA_8B, H100, 1, 1, CAL) > 150_000


def test_70b_bf16_does_not_fit_one_h100_but_fits_two() -> None:
    assert cost.kv_capacity_tokens(LLAMA_70B, H100, 1, 1, CAL) == 0
    assert cost.kv_capacity_tokens(LLAMA_70B, H100, 2, 1, CAL) > 8192


def test_405b_bf16_does_not_fit_one_node_of_8_h100() -> None:
    assert cost.kv_capacity_tokens(LLAMA_405B, H100, 8, 1, CAL) == 0
    assert cost.kv_capacity_tokens(LLAMA_405B, H100, 8, 2, CAL) > 100_000


def test_fp8_halves_the_weights() -> None:
    fp8 = LLAMA_70B.with_dtype("fp8")
    assert fp8.weight_bytes() == pytest.approx(LLAMA_70B.weight_bytes() / 2)
    assert cost.kv_capacity_tokens(fp8, H100, 1, 1, CAL) > 0


def test_gqa_kv_splits_across_tp_but_mla_latent_does_not() -> None:
    assert kv_cache.kv_bytes_per_token_per_gpu(LLAMA_70B, 8, 1) == LLAMA_70B.kv_bytes_per_token() / 8
    assert kv_cache.kv_bytes_per_token_per_gpu(DEEPSEEK, 8, 1) == DEEPSEEK.kv_bytes_per_token()
    # MLA: one 512 + 64 latent per layer, bf16.
    assert DEEPSEEK.kv_bytes_per_token() == 61 * (512 + 64) * 2


def test_tp_beyond_the_kv_heads_replicates_them() -> None:
    qwen_7b = CATALOG.model("Qwen/Qwen2.5-7B")  # 4 KV heads
    assert kv_cache.kv_heads_per_gpu(qwen_7b, 8) == 1


def test_valid_tp_divides_heads_and_stays_in_a_node() -> None:
    assert tensor_parallel_sizes(LLAMA_70B, 8) == [1, 2, 4, 8]
    assert tensor_parallel_sizes(CATALOG.model("Qwen/Qwen2.5-7B"), 8) == [1, 2, 4]  # 28 heads
    assert tensor_parallel_sizes(LLAMA_70B, 4) == [1, 2, 4]
    assert tp_invalid_reason(CATALOG.model("Qwen/Qwen2.5-7B"), 8, 8) is not None


def test_prefill_grows_superlinearly_with_prompt_length() -> None:
    short = cost.prefill_time_ms(LLAMA_8B, H100, 1, 1, [4096], CAL)
    long = cost.prefill_time_ms(LLAMA_8B, H100, 1, 1, [16384], CAL)
    assert long > 4 * short - 3 * CAL.prefill_overhead_ms


def test_batching_prompts_costs_less_than_one_by_one() -> None:
    batch = cost.prefill_time_ms(LLAMA_8B, H100, 1, 1, [256] * 8, CAL)
    single = cost.prefill_time_ms(LLAMA_8B, H100, 1, 1, [256], CAL)
    assert batch < 8 * single


def test_tensor_parallelism_shortens_prefill_and_decode_of_70b() -> None:
    for tp_small, tp_large in ((2, 4), (4, 8)):
        assert cost.prefill_time_ms(LLAMA_70B, H100, tp_large, 1, [4000], CAL) < cost.prefill_time_ms(
            LLAMA_70B, H100, tp_small, 1, [4000], CAL
        )
        assert cost.decode_step_ms(LLAMA_70B, H100, tp_large, 1, 8, 2000, CAL) < cost.decode_step_ms(
            LLAMA_70B, H100, tp_small, 1, 8, 2000, CAL
        )


def test_decode_step_of_8b_at_batch_1_is_about_reading_the_weights() -> None:
    # 15 GB of weights at 3.35 TB/s is 4.5 ms; vLLM measures 6-8 ms per token.
    step = cost.decode_step_ms(LLAMA_8B, H100, 1, 1, 1, 512, CAL)
    assert 4.5 < step < 10


def test_decode_step_grows_with_batch_and_context() -> None:
    steps = [cost.decode_step_ms(LLAMA_8B, H100, 1, 1, b, 1000, CAL) for b in (1, 8, 64, 256)]
    assert steps == sorted(steps)
    assert cost.decode_step_ms(LLAMA_8B, H100, 1, 1, 32, 8000, CAL) > cost.decode_step_ms(
        LLAMA_8B, H100, 1, 1, 32, 1000, CAL
    )


@pytest.mark.parametrize("gpu_name", ["H100-80GB", "H200-141GB", "A100-80GB"])
def test_kv_reads_cost_the_same_per_byte_at_any_batch(gpu_name: str) -> None:
    """A split-KV decode kernel streams the cache at kv_read_eff of HBM bandwidth whatever the batch
    (benchmarks/calibration/README.md): the batch-efficiency curve mbu(B) of the weight reads does
    not slow it. Before, mbu(B) priced the KV bytes too: 1.8x their cost at batch 256 on H200."""
    gpu = CATALOG.gpu(gpu_name)
    calibration = load_calibration(gpu)
    kv_bytes = cost.kv_bytes_per_token_per_gpu(LLAMA_70B, 4, 1)
    for batch in (64, 256):
        longer = cost.decode_step_ms(LLAMA_70B, gpu, 4, 1, batch, 8192, calibration)
        shorter = cost.decode_step_ms(LLAMA_70B, gpu, 4, 1, batch, 4096, calibration)
        expected = batch * 4096 * kv_bytes / (gpu.hbm_bytes_per_ms * calibration.kv_read_eff)
        assert longer - shorter == pytest.approx(expected)


def test_one_sequence_waits_on_its_longest_kv_stream() -> None:
    """At batch 1 the step reads one stream per KV head, each at kv_stream_eff of the bandwidth."""
    h200 = CATALOG.gpu("H200-141GB")
    calibration = load_calibration(h200)
    kv_bytes = cost.kv_bytes_per_token_per_gpu(LLAMA_70B, 8, 1)  # one KV head per shard at TP 8
    longer = cost.decode_step_ms(LLAMA_70B, h200, 8, 1, 1, 16384, calibration)
    shorter = cost.decode_step_ms(LLAMA_70B, h200, 8, 1, 1, 8192, calibration)
    assert longer - shorter == pytest.approx(
        8192 * kv_bytes / (h200.hbm_bytes_per_ms * calibration.kv_stream_eff)
    )


def test_moe_decode_at_batch_1_reads_only_the_active_experts() -> None:
    mixtral = CATALOG.model("mistralai/Mixtral-8x7B-v0.1")
    assert touched_share(mixtral, 1) == pytest.approx(2 / 8)
    assert touched_share(mixtral, 64) == pytest.approx(1, rel=1e-6)


def test_allreduce_costs_nothing_on_one_gpu_and_more_over_pcie() -> None:
    l40s = CATALOG.gpu("L40S")
    assert cost.allreduce_ms(1e6, 1, H100, CAL) == 0
    assert cost.allreduce_ms(1e6, 4, l40s, load_calibration(l40s)) > cost.allreduce_ms(1e6, 4, H100, CAL)


def test_kv_transfer_scales_with_tokens_and_parallel_streams() -> None:
    one = cost.kv_transfer_ms(LLAMA_70B, 4000, 400, CAL)
    assert cost.kv_transfer_ms(LLAMA_70B, 8000, 400, CAL) > one
    assert cost.kv_transfer_ms(LLAMA_70B, 4000, 400, CAL, streams=4) < one
    assert kv_cache.kv_transfer_streams(DEEPSEEK, 8, 8) == 1


def test_chunked_prefill_step_without_chunk_is_a_decode_step() -> None:
    decode = cost.decode_step_ms(LLAMA_8B, H100, 1, 1, 16, 1500, CAL)
    assert cost.mixed_step_ms(LLAMA_8B, H100, 1, 1, 16, 1500, 0, CAL) == decode
    assert cost.mixed_step_ms(LLAMA_8B, H100, 1, 1, 16, 1500, 512, CAL) > decode


def test_prefill_engine_timing_reproduces_the_cost_model_exactly() -> None:
    layout = Layout(H100, 4, 1, CAL)
    base, per_token, per_sq = prefill_coefficients(LLAMA_70B, layout)
    for lengths in ([100], [4000], [512, 2048, 7000]):
        linear = base + per_token * sum(lengths) + per_sq * sum(n * n for n in lengths)
        assert linear == pytest.approx(cost.prefill_time_ms(LLAMA_70B, H100, 4, 1, lengths, CAL), rel=1e-9)


def test_decode_engine_timing_matches_the_cost_model_at_its_operating_point_and_batch_1() -> None:
    layout = Layout(H100, 1, 1, CAL)
    base, per_seq, per_kilotoken = decode_coefficients(LLAMA_8B, layout, 64, 1200)
    at_point = base + per_seq * 64 + per_kilotoken * 64 * 1200 / 1000
    assert at_point == pytest.approx(cost.decode_step_ms(LLAMA_8B, H100, 1, 1, 64, 1200, CAL), rel=1e-6)
    single = base + per_seq + per_kilotoken * 1.2
    assert single == pytest.approx(cost.decode_step_ms(LLAMA_8B, H100, 1, 1, 1, 1200, CAL), rel=0.02)
    assert min(base, per_seq, per_kilotoken) >= 0


def test_calibration_defaults_follow_the_gpu_class() -> None:
    assert load_calibration(CATALOG.gpu("L4")).allreduce_latency_us > CAL.allreduce_latency_us
    # H100-80GB and H200-141GB ship fitted files; A100-80GB has none and gets its class's defaults.
    assert "class ampere" in load_calibration(CATALOG.gpu("A100-80GB")).source


def test_fitted_calibration_file_overrides_class_defaults(tmp_path: Path) -> None:
    defaults = load_calibration(H100, tmp_path)  # no file there yet
    (tmp_path / "H100-80GB.yaml").write_text("source: fit of 2026-11-21 on vLLM 0.11\nmfu_max: 0.7\n")
    fitted = load_calibration(H100, tmp_path)
    assert fitted.mfu_max == 0.7 and fitted.source.startswith("fit of")
    assert fitted.mbu_max == defaults.mbu_max
    faster = cost.prefill_time_ms(LLAMA_8B, H100, 1, 1, [4096], fitted)
    assert faster < cost.prefill_time_ms(LLAMA_8B, H100, 1, 1, [4096], defaults)


def test_an_edited_calibration_file_is_read_anew(tmp_path: Path) -> None:
    """The files' YAML is parsed once per content (every plan loads its GPUs' calibrations)."""
    path = tmp_path / "H100-80GB.yaml"
    path.write_text("mfu_max: 0.7\n")
    assert load_calibration(H100, tmp_path).mfu_max == 0.7
    path.write_text("mfu_max: 0.6\n")
    assert load_calibration(H100, tmp_path).mfu_max == 0.6
    path.write_text("- a list\n")
    with pytest.raises(CalibrationError, match="expected a mapping"):
        load_calibration(H100, tmp_path)


@pytest.mark.parametrize("content", ["mfu_max: 1.7\n", "mfu_maximum: 0.5\n", "- a list\n", "a: [unclosed\n"])
def test_malformed_calibration_file_is_a_clear_error(tmp_path: Path, content: str) -> None:
    (tmp_path / "H100-80GB.yaml").write_text(content)
    with pytest.raises(CalibrationError, match="H100-80GB"):
        load_calibration(H100, tmp_path)


def test_calibration_model_rejects_impossible_efficiencies() -> None:
    with pytest.raises(ValueError, match="mbu_max"):
        Calibration(**{**CAL.model_dump(), "mbu_max": 0})


def test_replica_communication_is_two_allreduces_per_layer() -> None:
    replica = cost.ReplicaCost(LLAMA_70B, H100, 8, 1, CAL)
    tokens = 4096
    one = cost.allreduce_ms(tokens * LLAMA_70B.hidden_size * 2, 8, H100, CAL)
    assert replica.communication_ms(tokens) == pytest.approx(2 * LLAMA_70B.num_layers * one, rel=1e-12)
