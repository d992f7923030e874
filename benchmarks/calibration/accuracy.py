"""The planner's predictions against held-out measurements, before and after calibration.

    .venv/bin/python benchmarks/calibration/accuracy.py benchmarks/calibration/results/h100_sxm.csv

For every timed row with `split == holdout` (or `--split fit`, the fit's own residuals): the
measurement, the planner's prediction with its class defaults ("before") and with the calibration it
loads for the GPU ("after": the shipped planner/data/calibration/<GPU>.yaml, or `--calibration-dir`),
as fit.py predicts a shard (the cost function less the TP all-reduce). The error is predicted over
measured less one, of prefill tokens/s and of the decode step time. Prints Markdown: a summary
(median, 90th percentile and max of |error| per phase) and one table per phase.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from fit import (
    PHASES,
    Phase,
    Point,
    catalog_gpu,
    class_calibration,
    error_summary,
    read_measurements,
    relative_error,
    shard_ms,
)

from tandem.planner.calibration import Calibration, load_calibration
from tandem.planner.catalog import load_catalog
from tandem.planner.gpu import GpuSpec

BANDS = (0.05, 0.10, 0.15, 0.20, 0.25)  # upper edges of the |error| bands


def _rate(point: Point, ms: float) -> str:
    """What the phase is judged on: prefill tokens/s, decode step ms."""
    return f"{point.tokens / ms * 1000:,.0f}" if point.phase == "prefill" else f"{ms:.2f}"


def summary(
    points: Sequence[Point], gpu: GpuSpec, calibrations: Sequence[tuple[str, Calibration]]
) -> list[str]:
    lines = [
        "| phase (error of) | points | calibration | median abs. | p90 abs. | max abs. | median signed |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for phase in PHASES:
        chosen = [p for p in points if p.phase == phase]
        what = "prefill (tokens/s)" if phase == "prefill" else "decode (step time)"
        for name, calibration in calibrations:
            errors = [relative_error(p, gpu, calibration) for p in chosen]
            median, p90, worst = error_summary(errors)
            signed = statistics.median(errors)
            figures = " | ".join((f"{median:.1%}", f"{p90:.1%}", f"{worst:.1%}", f"{signed:+.1%}"))
            lines.append(f"| {what} | {len(chosen)} | {name} | {figures} |")
    return lines


def distribution(
    points: Sequence[Point], gpu: GpuSpec, calibrations: Sequence[tuple[str, Calibration]]
) -> list[str]:
    """How many points fall in each band of |error|."""
    heads = [f"<= {b:.0%}" for b in BANDS] + [f"> {BANDS[-1]:.0%}"]
    lines = [f"| phase | calibration | {' | '.join(heads)} |", "| --- | --- |" + " ---: |" * len(heads)]
    for phase in PHASES:
        chosen = [p for p in points if p.phase == phase]
        for name, calibration in calibrations:
            errors = [abs(relative_error(p, gpu, calibration)) for p in chosen]
            edges = [-math.inf, *BANDS, math.inf]
            counts = [sum(low < e <= high for e in errors) for low, high in itertools.pairwise(edges)]
            lines.append(f"| {phase} | {name} | {' | '.join(map(str, counts))} |")
    return lines


def point_table(
    phase: Phase, points: Sequence[Point], gpu: GpuSpec, before: Calibration, after: Calibration
) -> list[str]:
    unit = "tokens/s" if phase == "prefill" else "step ms"
    lines = [
        f"| {phase} point (batch x length) | measured {unit} | before | error | after | error |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for p in points:
        if p.phase != phase:
            continue
        lines.append(
            f"| {p.label} | {_rate(p, p.measured_ms)} "
            f"| {_rate(p, shard_ms(p, gpu, before))} | {relative_error(p, gpu, before):+.1%} "
            f"| {_rate(p, shard_ms(p, gpu, after))} | {relative_error(p, gpu, after):+.1%} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "csv", type=Path, help="measure.py output, e.g. benchmarks/calibration/results/h100_sxm.csv"
    )
    parser.add_argument("--split", default="holdout", choices=("holdout", "fit"), help="rows to report on")
    parser.add_argument("--gpu", help="catalog GPU name (default: from the CSV's gpu_name)")
    parser.add_argument(
        "--calibration-dir", type=Path, help="folder of fitted <GPU>.yaml (default: the planner's)"
    )
    args = parser.parse_args(argv)

    catalog = load_catalog()
    measurements = read_measurements(args.csv, catalog)
    gpu = catalog.gpu(args.gpu) if args.gpu else catalog_gpu(measurements.gpu_name, catalog)
    points = [p for p in measurements.points if p.split == args.split]
    before, after = class_calibration(gpu), load_calibration(gpu, args.calibration_dir)
    print(f"{gpu.name}, {len(points)} points with split={args.split}")
    print(f"before: {before.source}\nafter: {after.source}\n")
    calibrations = [("before", before), ("after", after)]
    print("\n".join(summary(points, gpu, calibrations)))
    print()
    print("\n".join(distribution(points, gpu, calibrations)))
    for phase in PHASES:
        print()
        print("\n".join(point_table(phase, points, gpu, before, after)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
