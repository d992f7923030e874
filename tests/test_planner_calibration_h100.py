"""The H100 calibration fitted from benchmarks/calibration/results/h100_sxm.csv: it ships, the planner
uses it, its values are physical, it is what the fit finds, and it predicts the held-out
measurements within 25 %."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tandem.api import SloSpec, TokenStats, WorkloadSpec
from tandem.planner import PlanRequest, cost, load_calibration, load_catalog, plan
from tandem.planner.calibration import class_defaults

REPO = Path(__file__).resolve().parents[1]
CSV = REPO / "benchmarks" / "calibration" / "results" / "h100_sxm.csv"
CATALOG = load_catalog()
H100 = CATALOG.gpu("H100-80GB")
FITTED = load_calibration(H100)
HOPPER = class_defaults()["hopper"]
TOLERANCE = 0.25

Row = dict[str, str]


def _rows() -> list[Row]:
    with CSV.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _timed(split: str, phase: str) -> list[Row]:
    return [r for r in _rows() if r["split"] == split and r["phase"] == phase and r["status"] == "ok"]


def _shard_ms(row: Row) -> float:
    """The calibrated planner's time for the shard the row timed: one GPU, no TP all-reduce, so the
    planner's all-reduce terms come off."""
    model = CATALOG.model(row["model"])
    tp, batch, length = int(row["tp"]), int(row["batch"]), int(row["seq_len"])
    if row["phase"] == "prefill":
        total, tokens = cost.prefill_time_ms(model, H100, tp, 1, [length] * batch, FITTED), batch * length
    else:
        total, tokens = cost.decode_step_ms(model, H100, tp, 1, batch, length, FITTED), batch
    return total - cost.ReplicaCost(model, H100, tp, 1, FITTED).communication_ms(tokens)


def test_h100_loads_the_shipped_fit_by_default() -> None:
    assert FITTED.source.startswith("fit of ")
    for named in (CSV.relative_to(REPO).as_posix(), "NVIDIA H100", "benchmarks/calibration/fit.py"):
        assert named in FITTED.source
    assert FITTED.mfu_max != HOPPER["mfu_max"] and FITTED.mbu_max != HOPPER["mbu_max"]
    # What the measurements cannot tell stays at the class defaults.
    assert FITTED.mfu_decode == HOPPER["mfu_decode"]
    assert FITTED.allreduce_latency_us == HOPPER["allreduce_latency_us"]


def test_plan_on_h100_names_the_fit_in_its_calibration_sources() -> None:
    request = PlanRequest(
        model="meta-llama/Llama-3.1-8B-Instruct",
        prefill_gpus=(H100.name,),
        decode_gpus=(H100.name,),
        slo=SloSpec(ttft_ms=2000, itl_ms=50),
        workload=WorkloadSpec(
            requests_per_second=2, prompt_tokens=TokenStats(mean=1000), output_tokens=TokenStats(mean=200)
        ),
    )
    assert plan(request).calibration_sources == {H100.name: FITTED.source}


def test_h100_fit_values_are_physical() -> None:
    for efficiency in (FITTED.mfu_max, FITTED.attn_eff, FITTED.mbu_max):
        assert 0 < efficiency <= 1
    # No GEMM beats the best one the run measured (the 8192^3 probe, from idle); attention kernels
    # reach less of the peak than the linear layers.
    probe = next(r for r in _rows() if r["model"] == "gemm_bf16_8192")
    assert FITTED.mfu_max * H100.bf16_tflops < float(probe["achieved_tflops"])
    assert FITTED.attn_eff < FITTED.mfu_max
    # The small-batch penalty of prefill (t_half tokens at full rate) costs no more than reading the
    # weights once at decode's bandwidth: BF16 weights cost 2 bytes and 2 FLOPs per parameter and
    # token, so t_half stays below the ridge point, peak * mfu_max / (hbm * mbu_max) tokens.
    ridge = H100.bf16_tflops * 1e3 * FITTED.mfu_max / (H100.hbm_bandwidth_gbps * FITTED.mbu_max)
    assert 0 < FITTED.t_half_tokens < ridge
    assert FITTED.mbu_batch_half > 0
    # The fixed times of a step fit inside the shortest step measured for every model.
    for row in _timed("fit", "decode"):
        layers = CATALOG.model(row["model"]).num_layers
        fixed_ms = layers * FITTED.layer_overhead_us / 1000 + FITTED.step_overhead_ms
        assert 0 <= fixed_ms < float(row["ms_full_depth"])
    assert FITTED.prefill_overhead_ms >= 0


def _fit_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("calibration_fit", CSV.parents[1] / "fit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_shipped_h100_values_are_what_the_fit_finds_in_the_csv() -> None:
    fit = _fit_script()
    refit = fit.fit(fit.read_measurements(CSV, CATALOG), H100)
    fitted_names = list(fit.DECIMALS)
    assert {n: getattr(refit, n) for n in fitted_names} == {n: getattr(FITTED, n) for n in fitted_names}


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_fit_predicts_held_out_h100_points_within_25_percent(phase: str) -> None:
    rows = _timed("holdout", phase)
    assert len(rows) >= 30
    errors = {}
    for r in rows:
        ratio = _shard_ms(r) / float(r["ms_full_depth"])
        depth = ", all layers" if r["notes"].startswith("depth check") else ""
        # Prefill is judged on tokens/s, decode on the step time.
        errors[f"{r['model']} TP{r['tp']} {r['batch']}x{r['seq_len']}{depth}"] = (
            1 / ratio - 1 if phase == "prefill" else ratio - 1
        )
    outside = {point: f"{e:+.1%}" for point, e in errors.items() if abs(e) > TOLERANCE}
    assert not outside, outside
