"""The calibrations fitted from benchmarks/calibration/results/<gpu>_sxm.csv (H100 and H200), with the
all-reduce keys of results/h200_allreduce.csv: each ships, the planner uses it, its values are
physical, it is what the fit finds, and it predicts the held-out shard measurements within 25 %
(tests/test_planner_calibration_allreduce.py judges the all-reduce keys)."""

from __future__ import annotations

import csv
import importlib.util
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType

import pytest

from tandem.api import SloSpec, TokenStats, WorkloadSpec
from tandem.planner import PlanRequest, cost, load_calibration, load_catalog, plan
from tandem.planner.calibration import class_defaults

REPO = Path(__file__).resolve().parents[1]
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

    @property
    def csv(self) -> Path:
        return RESULTS / self.csv_name

    @cached_property
    def rows(self) -> list[Row]:
        with self.csv.open(newline="") as handle:
            return list(csv.DictReader(handle))


# Only the H200 has a multi-GPU measurement; the H100 carries its all-reduce fit over (same NVLink).
FITS = [
    Fit("H100-80GB", "NVIDIA H100", "h100_sxm.csv", "h200_allreduce.csv"),
    Fit("H200-141GB", "NVIDIA H200", "h200_sxm.csv", "h200_allreduce.csv"),
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
    # What the measurements cannot tell stays at the class defaults.
    assert fitted.mfu_decode == HOPPER["mfu_decode"]
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
    for efficiency in (fitted.mfu_max, fitted.attn_eff, fitted.mbu_max):
        assert 0 < efficiency <= 1
    # No GEMM beats the best one the run measured (the 8192^3 probe, from idle); attention kernels
    # reach less of the peak than the linear layers.
    probe = next(r for r in measured.rows if r["model"] == "gemm_bf16_8192")
    assert fitted.mfu_max * gpu.bf16_tflops < float(probe["achieved_tflops"])
    assert fitted.attn_eff < fitted.mfu_max
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
    refit = fit.fit(fit.read_measurements(measured.csv, CATALOG), gpu)
    collective = fit.read_allreduce(RESULTS / measured.allreduce_csv_name)
    refit = fit.fit_allreduce(collective, fit.measured_gpu(collective, gpu, CATALOG), refit)
    fitted_names = [*fit.DECIMALS, *fit.ALLREDUCE_DECIMALS]
    assert {n: getattr(refit, n) for n in fitted_names} == {n: getattr(fitted, n) for n in fitted_names}


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_fit_predicts_held_out_points_within_25_percent(measured: Fit, phase: str) -> None:
    rows = _timed(measured, "holdout", phase)
    assert len(rows) >= 30
    errors = {}
    for r in rows:
        ratio = _shard_ms(measured, r) / float(r["ms_full_depth"])
        depth = ", all layers" if r["notes"].startswith("depth check") else ""
        # Prefill is judged on tokens/s, decode on the step time.
        errors[f"{r['model']} TP{r['tp']} {r['batch']}x{r['seq_len']}{depth}"] = (
            1 / ratio - 1 if phase == "prefill" else ratio - 1
        )
    outside = {point: f"{e:+.1%}" for point, e in errors.items() if abs(e) > TOLERANCE}
    assert not outside, outside


def test_allreduce_fit_refuses_a_gpu_linked_differently() -> None:
    fit = _fit_script()
    collective = fit.read_allreduce(RESULTS / "h200_allreduce.csv")
    with pytest.raises(SystemExit, match="does not carry over to A100-80GB"):
        fit.measured_gpu(collective, CATALOG.gpu("A100-80GB"), CATALOG)
