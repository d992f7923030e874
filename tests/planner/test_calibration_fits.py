"""The calibrations fitted from benchmarks/calibration/results/h100_sxm.csv and h200_sxm_long.csv, with
the all-reduce keys of results/h200_allreduce.csv: each ships, the planner uses it, its values are
physical, it is what the fit finds, and it predicts the held-out shard measurements within 25 %,
much closer per batch size (tests/planner/test_calibration_allreduce.py judges the all-reduce
keys; tests/planner/test_pricing.py the ranges the issue found mispriced)."""

from __future__ import annotations

import csv
import importlib.util
import statistics
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType

import pytest
from paths import REPO

from tandem.api import SloSpec, TokenStats, WorkloadSpec
from tandem.planner import PlanRequest, cost, load_calibration, load_catalog, plan
from tandem.planner.calibration import class_defaults

REPO = REPO
RESULTS = REPO / "benchmarks" / "calibration" / "results"
CATALOG = load_catalog()
HOPPER = class_defaults()["hopper"]
TOLERANCE = 0.25

Row = dict[str, str]


@dataclass(frozen=True)
class Fit:
    gpu_name: str
    device_name: str
    csv_name: str
    allreduce_csv_name: str
    # The GPU whose fit gives this one its attention-kernel keys (fit.py --kernels-from).
    kernels_from: str | None = None

    @property
    def csv(self) -> Path:
        return RESULTS / self.csv_name

    @cached_property
    def rows(self) -> list[Row]:
        with self.csv.open(newline="") as handle:
            return list(csv.DictReader(handle))


# Only the H200 has a multi-GPU measurement and timings of every SDPA attention kernel; the H100
# carries the all-reduce fit (same NVLink) and the kernel keys (same SMs) over.
FITS = [
    Fit("H100-80GB", "NVIDIA H100", "h100_sxm.csv", "h200_allreduce.csv", kernels_from="H200-141GB"),
    Fit("H200-141GB", "NVIDIA H200", "h200_sxm_long.csv", "h200_allreduce.csv"),
]


@pytest.fixture(params=FITS, ids=lambda f: f.gpu_name)
def measured(request: pytest.FixtureRequest) -> Fit:
    fit: Fit = request.param
    return fit


def _timed(fit: Fit, split: str, phase: str) -> list[Row]:
    return [r for r in fit.rows if r["split"] == split and r["phase"] == phase and r["status"] == "ok"]


def _shard_ms(fit: Fit, row: Row) -> float:
    """The calibrated planner's time for the shard the row timed: one GPU, no TP all-reduce, so the
    planner's all-reduce terms come off."""
    gpu = CATALOG.gpu(fit.gpu_name)
    fitted = load_calibration(gpu)
    model = CATALOG.model(row["model"])
    tp, batch, length = int(row["tp"]), int(row["batch"]), int(row["seq_len"])
    if row["phase"] == "prefill":
        total, tokens = cost.prefill_time_ms(model, gpu, tp, 1, [length] * batch, fitted), batch * length
    else:
        total, tokens = cost.decode_step_ms(model, gpu, tp, 1, batch, length, fitted), batch
    return total - cost.ReplicaCost(model, gpu, tp, 1, fitted).communication_ms(tokens)


def test_gpu_loads_the_shipped_fit_by_default(measured: Fit) -> None:
    fitted = load_calibration(CATALOG.gpu(measured.gpu_name))
    assert fitted.source.startswith("fit of ")
    for named in (
        measured.csv.relative_to(REPO).as_posix(),
        measured.device_name,
        "benchmarks/calibration/fit.py",
        f"--allreduce benchmarks/calibration/results/{measured.allreduce_csv_name}",
    ):
        assert named in fitted.source
    assert fitted.mfu_max != HOPPER["mfu_max"] and fitted.mbu_max != HOPPER["mbu_max"]
    assert fitted.allreduce_latency_us != HOPPER["allreduce_latency_us"]
    assert fitted.kv_read_eff != HOPPER["kv_read_eff"] and fitted.mfu_decode != HOPPER["mfu_decode"]
    # What the measurements cannot tell stays at the class defaults.
    assert fitted.kv_transfer_eff == HOPPER["kv_transfer_eff"]


def test_plan_names_the_fit_in_its_calibration_sources(measured: Fit) -> None:
    gpu = CATALOG.gpu(measured.gpu_name)
    fitted = load_calibration(gpu)
    request = PlanRequest(
        model="meta-llama/Llama-3.1-8B-Instruct",
        prefill_gpus=(gpu.name,),
        decode_gpus=(gpu.name,),
        slo=SloSpec(ttft_ms=2000, itl_ms=50),
        workload=WorkloadSpec(
            requests_per_second=2, prompt_tokens=TokenStats(mean=1000), output_tokens=TokenStats(mean=200)
        ),
    )
    assert plan(request).calibration_sources == {gpu.name: fitted.source}


def test_fit_values_are_physical(measured: Fit) -> None:
    gpu = CATALOG.gpu(measured.gpu_name)
    fitted = load_calibration(gpu)
    for efficiency in (
        fitted.mfu_max,
        fitted.attn_eff,
        fitted.mbu_max,
        fitted.mfu_decode,
        fitted.kv_read_eff,
        fitted.kv_stream_eff,
    ):
        assert 0 < efficiency <= 1
    # No GEMM beats the best one the run measured (the 8192^3 probe, from idle); attention kernels
    # reach less of the peak than the linear layers; one KV stream less than a whole batch's.
    probe = next(r for r in measured.rows if r["model"] == "gemm_bf16_8192")
    for mfu in (fitted.mfu_max, fitted.mfu_decode):
        assert mfu * gpu.bf16_tflops < float(probe["achieved_tflops"])
    assert fitted.attn_eff < fitted.mfu_max
    assert fitted.kv_stream_eff < fitted.kv_read_eff
    # The small-batch penalty of prefill (t_half tokens at full rate) costs no more than reading the
    # weights once at decode's bandwidth: BF16 weights cost 2 bytes and 2 FLOPs per parameter and
    # token, so t_half stays below the ridge point, peak * mfu_max / (hbm * mbu_max) tokens.
    ridge = gpu.bf16_tflops * 1e3 * fitted.mfu_max / (gpu.hbm_bandwidth_gbps * fitted.mbu_max)
    assert 0 < fitted.t_half_tokens < ridge
    assert fitted.mbu_batch_half > 0
    # The fixed times of a step fit inside the shortest step measured for every model.
    for row in _timed(measured, "fit", "decode"):
        layers = CATALOG.model(row["model"]).num_layers
        fixed_ms = layers * fitted.layer_overhead_us / 1000 + fitted.step_overhead_ms
        assert 0 <= fixed_ms < float(row["ms_full_depth"])
    assert fitted.prefill_overhead_ms >= 0


def _fit_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("calibration_fit", RESULTS.parent / "fit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_shipped_values_are_what_the_fit_finds_in_the_csv(measured: Fit) -> None:
    gpu = CATALOG.gpu(measured.gpu_name)
    fitted = load_calibration(gpu)
    fit = _fit_script()
    fixed = {}
    if measured.kernels_from:
        carried = load_calibration(CATALOG.gpu(measured.kernels_from))
        fixed = {name: getattr(carried, name) for name in fit.KERNEL_KEYS}
    refit = fit.fit(fit.read_measurements(measured.csv, CATALOG), gpu, fixed)
    collective = fit.read_allreduce(RESULTS / measured.allreduce_csv_name)
    refit = fit.fit_allreduce(collective, fit.measured_gpu(collective, gpu, CATALOG), refit)
    fitted_names = [*fit.DECIMALS, *fit.ALLREDUCE_DECIMALS]
    assert {n: getattr(refit, n) for n in fitted_names} == {n: getattr(fitted, n) for n in fitted_names}


def _held_out_errors(measured: Fit, phase: str) -> dict[str, tuple[Row, float]]:
    """Each held-out point of `phase` by label, with the error of the calibrated planner on it:
    predicted over measured less one, of tokens/s for prefill and of the step time for decode."""
    errors = {}
    for r in _timed(measured, "holdout", phase):
        ratio = _shard_ms(measured, r) / float(r["ms_full_depth"])
        depth = ", all layers" if r["notes"].startswith("depth check") else ""
        label = f"{r['model']} TP{r['tp']} {r['batch']}x{r['seq_len']}{depth}"
        errors[label] = (r, 1 / ratio - 1 if phase == "prefill" else ratio - 1)
    return errors


# Held-out points allowed past 25 %, and why. At one sequence of 32k tokens FlashAttention-2 splits
# each KV stream twice as often as at 16k: the stream reads no slower than at 16k, where the
# planner's one-stream bound, linear in the context, doubles (pessimistic: the safe side).
KNOWN_OUTSIDE = {("H200-141GB", "llama-3.1-8b TP2 1x32768"): 0.30}


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_fit_predicts_held_out_points_within_25_percent(measured: Fit, phase: str) -> None:
    errors = _held_out_errors(measured, phase)
    assert len(errors) >= 30
    outside = {point: e for point, (_, e) in errors.items() if abs(e) > TOLERANCE}
    for point, e in outside.items():
        assert abs(e) <= KNOWN_OUTSIDE.get((measured.gpu_name, point), TOLERANCE), (point, f"{e:+.1%}")


# |error| of the H200 step time, per decode batch, at most (median, max) over the held-out points.
# Batch 1 carries the 32k-context outlier above (FlashAttention-2 reads one long stream irregularly:
# its split heuristic; the planner linearly). The largest errors from batch 16 up are Llama-3.1-8B
# at TP 2 over short contexts (+10 % at 64 x 512): its 32 thin layers cost less than the fitted
# per-layer floor, which the four fitted shards set.
DECODE_BY_BATCH = {1: (0.05, 0.30), 4: (0.05, 0.15)} | {
    batch: (0.05, 0.12) for batch in (16, 64, 128, 192, 256)
}


@pytest.mark.parametrize("batch", sorted(DECODE_BY_BATCH))
def test_h200_decode_error_by_batch_size(batch: int) -> None:
    """The held-out decode points cover batches 1-256, contexts to 16k at batch >= 64 (and 32k
    below), shapes the fit never saw (Llama-3.1-8B at TP 2, Qwen2.5-32B at TP 2, Qwen2.5-72B at
    TP 8) among them; benchmarks/calibration/accuracy.py prints the same table."""
    h200 = next(f for f in FITS if f.gpu_name == "H200-141GB")
    chosen = [(r, e) for r, e in _held_out_errors(h200, "decode").values() if int(r["batch"]) == batch]
    contexts = {int(r["seq_len"]) for r, _ in chosen}
    models = {r["model"] for r, _ in chosen}
    assert {4096, 8192} <= contexts and {"qwen2.5-32b", "qwen2.5-72b"} <= models
    if batch <= 128:
        assert 16384 in contexts
    magnitudes = sorted(abs(e) for _, e in chosen)
    median_bound, max_bound = DECODE_BY_BATCH[batch]
    assert statistics.median(magnitudes) <= median_bound and magnitudes[-1] <= max_bound, magnitudes


def test_h200_held_out_prefills_reach_16k_prompts_within_12_percent() -> None:
    """The largest, +10 % tokens/s, are the TP 8 shards of the 70B models: their narrow GEMMs reach
    less of the peak than the one `mfu_max` all shards share (benchmarks/calibration/README.md)."""
    h200 = next(f for f in FITS if f.gpu_name == "H200-141GB")
    long = {p: e for p, (r, e) in _held_out_errors(h200, "prefill").items() if int(r["seq_len"]) >= 12288}
    assert len(long) >= 10 and any(p.endswith("x16384") for p in long)
    assert all(abs(e) <= 0.12 for e in long.values()), long


def test_allreduce_fit_refuses_a_gpu_linked_differently() -> None:
    fit = _fit_script()
    collective = fit.read_allreduce(RESULTS / "h200_allreduce.csv")
    with pytest.raises(SystemExit, match="does not carry over to A100-80GB"):
        fit.measured_gpu(collective, CATALOG.gpu("A100-80GB"), CATALOG)


def _h200_rows(phase: str) -> list[tuple[Row, float]]:
    """Every timed H200 point of `phase`, fit and held out, with predicted over measured time."""
    h200 = next(f for f in FITS if f.gpu_name == "H200-141GB")
    rows = _timed(h200, "fit", phase) + _timed(h200, "holdout", phase)
    return [(r, _shard_ms(h200, r) / float(r["ms_full_depth"])) for r in rows]


def test_large_batch_long_context_decode_is_priced_within_10_percent() -> None:
    """Issue #12: decode of batch 256 over 4k contexts came out 1.4-1.7x too slow on every shape.
    The batch-efficiency curve mbu(B) slowed the KV reads with the weight reads; a split-KV decode
    kernel keeps reading the cache at ~4.5 TB/s at any batch (the planner's kv_read_eff)."""
    chosen = [
        (r, ratio) for r, ratio in _h200_rows("decode") if int(r["batch"]) >= 64 and int(r["seq_len"]) >= 4096
    ]
    at_256x4k = {r["model"] + r["tp"] for r, _ in chosen if (r["batch"], r["seq_len"]) == ("256", "4096")}
    assert len(chosen) >= 50 and len(at_256x4k) >= 5
    off = {
        f"{r['model']} TP{r['tp']} {r['batch']}x{r['seq_len']}": f"{ratio:.2f}x"
        for r, ratio in chosen
        if abs(ratio - 1) > 0.10
    }
    assert not off, off


def test_long_prefills_of_small_models_are_priced_within_10_percent() -> None:
    """Issue #12: 16k-token prefills of the small models came out ~1.3x too slow: attn_eff had been
    fitted to FlashAttention-2, which reaches half the rate of the fastest SDPA kernel there."""
    small = {"llama-3.1-8b", "qwen2.5-7b"}
    chosen = [
        (r, ratio) for r, ratio in _h200_rows("prefill") if r["model"] in small and int(r["seq_len"]) >= 12288
    ]
    assert len(chosen) >= 8 and any(r["seq_len"] == "16384" for r, _ in chosen)
    off = {
        f"{r['model']} TP{r['tp']} {r['batch']}x{r['seq_len']}": f"{ratio:.2f}x"
        for r, ratio in chosen
        if abs(ratio - 1) > 0.10
    }
    assert not off, off
