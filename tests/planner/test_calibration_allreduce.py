"""The tensor-parallel all-reduce keys the planner ships: fitted for H200-141GB to
benchmarks/calibration/results/h200_allreduce.csv (PyTorch + NCCL on 4 NVLink H200s, eager rows)
and carried over to H100-80GB. They load, they are physical, and `cost.allreduce_ms` with them
predicts the held-out measurements within 25 %, but for three named points."""

from __future__ import annotations

import csv
import statistics

import pytest
from paths import REPO

from tandem.planner import cost, load_calibration, load_catalog
from tandem.planner.calibration import Calibration, class_defaults, default_calibration_dir

REPO = REPO
RESULTS = REPO / "benchmarks" / "calibration" / "results"
CATALOG = load_catalog()
H200 = CATALOG.gpu("H200-141GB")
# The fit's CSV, and a second run of the same grid in the same call that the fit never saw.
RUNS = ("h200_allreduce.csv", "h200_allreduce_run2.csv")
MODE = "eager"  # the rows fit.py fits (benchmarks/calibration/README.md says why)
TOLERANCE = 0.25
# (tp, message bytes) -> the largest |error| allowed instead, and why. The measured time is a step
# function where a line of latency + bytes / bandwidth is not: flat at the host's launch time up
# to 1 MiB, then up by NCCL's protocol change.
KNOWN_OUTSIDE = {
    # End of the flat part: still 17 us measured, the line is at 22 us (+26 %, +28 %: pessimistic).
    (3, 8192 * 64 * 2): 0.35,
    # Just past the step (39-43 us; 26 us at 2 MiB): the line says 28.5 us (-27 %, -34 %).
    (3, 5120 * 256 * 2): 0.35,
    # Run 1 only: TP 2 read 27 us from 256 to 640 KiB, run 2 17 us as every other TP (-32 %).
    (2, 3584 * 64 * 2): 0.35,
}

Row = dict[str, str]


def _rows(name: str, split: str) -> list[Row]:
    with (RESULTS / name).open(newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["mode"] == MODE and r["split"] == split]


def _error(row: Row, calibration: Calibration) -> float:
    """Predicted over measured time, less one."""
    predicted = cost.allreduce_ms(int(row["message_bytes"]), int(row["tp"]), H200, calibration)
    return predicted / float(row["ms"]) - 1


@pytest.mark.parametrize("gpu_name", ["H200-141GB", "H100-80GB"])
def test_gpu_loads_the_measured_allreduce_keys(gpu_name: str) -> None:
    fitted = load_calibration(CATALOG.gpu(gpu_name))
    assert "benchmarks/calibration/results/h200_allreduce.csv" in fitted.source
    hopper = class_defaults()["hopper"]
    assert fitted.allreduce_latency_us != hopper["allreduce_latency_us"]
    assert fitted.allreduce_eff != hopper["allreduce_eff"]
    shipped = load_calibration(H200)
    assert (fitted.allreduce_latency_us, fitted.allreduce_eff) == (
        shipped.allreduce_latency_us,
        shipped.allreduce_eff,
    )


def test_h100_file_says_its_allreduce_keys_come_from_the_h200() -> None:
    text = (default_calibration_dir() / "H100-80GB.yaml").read_text()
    assert "carried over from H200-141GB" in text
    assert CATALOG.gpu("H100-80GB").interconnect == H200.interconnect


def test_allreduce_keys_are_physical() -> None:
    fitted = load_calibration(H200)
    rows = _rows(RUNS[0], "fit") + _rows(RUNS[0], "holdout")
    # The modelled ring bandwidth stays below the best bus bandwidth measured (256 MiB messages).
    assert fitted.allreduce_eff * H200.interconnect.link_bandwidth_gbps < max(
        float(r["busbw_gbps"]) for r in rows
    )
    # The latency is what the smallest messages (64 KiB and less) took, within their spread.
    small_us = [float(r["ms"]) * 1000 for r in rows if int(r["message_bytes"]) <= 64 * 1024]
    assert min(small_us) < fitted.allreduce_latency_us < max(small_us)


@pytest.mark.parametrize("run", RUNS)
def test_allreduce_predicts_held_out_points_within_25_percent(run: str) -> None:
    fitted = load_calibration(H200)
    rows = _rows(run, "holdout")
    assert {int(r["tp"]) for r in rows} == {2, 3, 4} and len(rows) >= 27
    errors = {(int(r["tp"]), int(r["message_bytes"])): _error(r, fitted) for r in rows}
    outside = {point: e for point, e in errors.items() if abs(e) > TOLERANCE}
    unexplained = {point: f"{e:+.1%}" for point, e in outside.items() if point not in KNOWN_OUTSIDE}
    assert not unexplained, unexplained
    for point, e in outside.items():
        assert abs(e) <= KNOWN_OUTSIDE[point], (point, f"{e:+.1%}")


def test_measured_keys_beat_the_class_defaults_on_held_out_points() -> None:
    fitted = load_calibration(H200)
    defaults = Calibration(**class_defaults()["hopper"])
    rows = _rows(RUNS[0], "holdout")
    before = statistics.median(abs(_error(r, defaults)) for r in rows)
    after = statistics.median(abs(_error(r, fitted)) for r in rows)
    assert after < 0.1 and before > TOLERANCE
