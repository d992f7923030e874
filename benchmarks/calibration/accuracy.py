"""The planner's predictions against held-out measurements, before and after calibration.

    .venv/bin/python benchmarks/calibration/accuracy.py benchmarks/calibration/results/h100_sxm.csv

For every timed row with `split == holdout` (or `--split fit`, the fit's own residuals): the
measurement, the planner's prediction with its class defaults ("before") and with the calibration it
loads for the GPU ("after": the shipped planner/data/calibration/<GPU>.yaml, or `--calibration-dir`),
as fit.py predicts a shard (the cost function less the TP all-reduce). The error is predicted over
measured less one, of prefill tokens/s and of the decode step time. Prints Markdown: a summary
(median, 90th percentile and max of |error| per phase) and one table per phase.

    .venv/bin/python benchmarks/calibration/accuracy.py --allreduce \
        benchmarks/calibration/results/h200_allreduce.csv

does the same for the tensor-parallel all-reduce (allreduce.py's CSV): the time of
`tandem.planner.cost.allreduce_ms` against each row, per TP size and mode (`--gpu` judges another
GPU's shipped keys against these rows, e.g. H100-80GB's carried-over ones).
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path

from fit import (
    KERNEL_COLUMNS,
    PHASES,
    AllReducePoint,
    Phase,
    Point,
    allreduce_error,
    catalog_gpu,
    class_calibration,
    error_summary,
    read_allreduce,
    read_measurements,
    relative_error,
    shard_ms,
)

from tandem.planner import cost
from tandem.planner.calibration import Calibration, load_calibration
from tandem.planner.catalog import Catalog, load_catalog
from tandem.planner.gpu import GpuSpec

BANDS = (0.05, 0.10, 0.15, 0.20, 0.25)  # upper edges of the |error| bands
BAND_HEADS = [f"<= {b:.0%}" for b in BANDS] + [f"> {BANDS[-1]:.0%}"]


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


# Decode steps are judged by batch (all contexts, and the long ones alone), prefill by prompt length.
LONG_CONTEXT = 4096
PROMPT_BANDS = ((1, 2048), (4096, 8192), (12288, 16384))


def buckets(points: Sequence[Point]) -> list[tuple[str, list[Point]]]:
    """The held-out points grouped as the accuracy tables report them."""
    decode = [p for p in points if p.phase == "decode"]
    groups = [
        (f"decode, batch {b}", [p for p in decode if p.batch == b]) for b in sorted({p.batch for p in decode})
    ]
    groups += [
        (f"decode, batch {b}, context >= {LONG_CONTEXT}", chosen)
        for b in sorted({p.batch for p in decode})
        if (chosen := [p for p in decode if p.batch == b and p.seq_len >= LONG_CONTEXT])
    ]
    prefill = [p for p in points if p.phase == "prefill"]
    groups += [
        (f"prefill, prompts {low}-{high}", chosen)
        for low, high in PROMPT_BANDS
        if (chosen := [p for p in prefill if low <= p.seq_len <= high])
    ]
    return groups


def bucket_table(
    points: Sequence[Point], gpu: GpuSpec, calibrations: Sequence[tuple[str, Calibration]]
) -> list[str]:
    """|error| median, p90 and max, and the median signed error, per bucket and calibration."""
    names = " | ".join(f"{name}: median / p90 / max (signed)" for name, _ in calibrations)
    lines = [f"| points | n | {names} |", "| --- | ---: |" + " ---: |" * len(calibrations)]
    for label, chosen in buckets(points):
        cells = []
        for _, calibration in calibrations:
            errors = [relative_error(p, gpu, calibration) for p in chosen]
            median, p90, worst = error_summary(errors)
            cells.append(f"{median:.1%} / {p90:.1%} / {worst:.1%} ({statistics.median(errors):+.1%})")
        lines.append(f"| {label} | {len(chosen)} | {' | '.join(cells)} |")
    return lines


def distribution(
    points: Sequence[Point], gpu: GpuSpec, calibrations: Sequence[tuple[str, Calibration]]
) -> list[str]:
    """How many points fall in each band of |error|."""
    lines = [
        f"| phase | calibration | {' | '.join(BAND_HEADS)} |",
        "| --- | --- |" + " ---: |" * len(BAND_HEADS),
    ]
    for phase in PHASES:
        chosen = [p for p in points if p.phase == phase]
        for name, calibration in calibrations:
            counts = band_counts(relative_error(p, gpu, calibration) for p in chosen)
            lines.append(f"| {phase} | {name} | {' | '.join(map(str, counts))} |")
    return lines


def band_counts(errors: Iterable[float]) -> list[int]:
    """How many |errors| fall in each band."""
    magnitudes = [abs(e) for e in errors]
    edges = [-math.inf, *BANDS, math.inf]
    return [sum(low < e <= high for e in magnitudes) for low, high in itertools.pairwise(edges)]


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


def _size(message_bytes: int) -> str:
    return f"{message_bytes / 2**20:g} MiB" if message_bytes >= 2**20 else f"{message_bytes / 2**10:g} KiB"


def allreduce_report(
    points: Sequence[AllReducePoint], gpu: GpuSpec, calibrations: Sequence[tuple[str, Calibration]]
) -> list[str]:
    """Summary per mode and TP size, bands of |error| per mode, and one row per point."""
    series = sorted({(p.mode, p.tp) for p in points}, key=lambda s: (s[0] != "graph", s[1]))
    lines = [
        "| mode | TP | points | calibration | median abs. | p90 abs. | max abs. | median signed |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for mode, tp in series:
        chosen = [p for p in points if (p.mode, p.tp) == (mode, tp)]
        for name, calibration in calibrations:
            errors = [allreduce_error(p, gpu, calibration) for p in chosen]
            median, p90, worst = error_summary(errors)
            figures = f"{median:.1%} | {p90:.1%} | {worst:.1%} | {statistics.median(errors):+.1%}"
            lines.append(f"| {mode} | {tp} | {len(chosen)} | {name} | {figures} |")
    lines += ["", f"| mode | calibration | {' | '.join(BAND_HEADS)} |", "| --- | --- |" + " ---: |" * 6]
    for mode in sorted({m for m, _ in series}, key=lambda m: m != "graph"):
        for name, calibration in calibrations:
            counts = band_counts(allreduce_error(p, gpu, calibration) for p in points if p.mode == mode)
            lines.append(f"| {mode} | {name} | {' | '.join(map(str, counts))} |")
    heads = " | ".join(f"{name} us | error" for name, _ in calibrations)
    lines += ["", f"| mode | TP | message | measured us | {heads} |", "| --- | ---: | ---: | ---: |"]
    lines[-1] += " ---: |" * 2 * len(calibrations)
    for mode, tp in series:
        for p in (p for p in points if (p.mode, p.tp) == (mode, tp)):
            predicted = [(cost.allreduce_ms(p.message_bytes, tp, gpu, c), c) for _, c in calibrations]
            cells = " | ".join(f"{ms * 1e3:.1f} | {allreduce_error(p, gpu, c):+.1%}" for ms, c in predicted)
            lines.append(
                f"| {mode} | {tp} | {_size(p.message_bytes)} | {p.measured_ms * 1e3:.1f} | {cells} |"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "csv",
        type=Path,
        nargs="?",
        help="measure.py output, e.g. benchmarks/calibration/results/h100_sxm.csv",
    )
    parser.add_argument("--allreduce", type=Path, metavar="CSV", help="allreduce.py output to judge")
    parser.add_argument("--split", default="holdout", choices=("holdout", "fit"), help="rows to report on")
    parser.add_argument(
        "--attention",
        choices=list(KERNEL_COLUMNS),
        default="fastest",
        help="judge the times with the fastest SDPA attention kernel (default) or with flash alone",
    )
    parser.add_argument("--gpu", help="catalog GPU name (default: from the CSV's gpu_name)")
    parser.add_argument(
        "--calibration-dir", type=Path, help="folder of fitted <GPU>.yaml (default: the planner's)"
    )
    args = parser.parse_args(argv)
    if not (args.csv or args.allreduce):
        parser.error("give a measure.py CSV, --allreduce CSV, or both")

    catalog = load_catalog()
    if args.csv:
        shard_report(args, catalog)
    if args.allreduce:
        allreduce_main(args, catalog)
    return 0


def allreduce_main(args: argparse.Namespace, catalog: Catalog) -> None:
    collective = read_allreduce(args.allreduce)
    gpu = catalog.gpu(args.gpu) if args.gpu else catalog_gpu(collective.gpu_name, catalog)
    points = [p for p in collective.points if p.split == args.split]
    before, after = class_calibration(gpu), load_calibration(gpu, args.calibration_dir)
    print(f"all-reduce keys of {gpu.name} against {collective.label}: {len(points)} points, {args.split}")
    print(f"before: {before.source}\nafter: {after.source}\n")
    print("\n".join(allreduce_report(points, gpu, [("before", before), ("after", after)])))


def shard_report(args: argparse.Namespace, catalog: Catalog) -> None:
    measurements = read_measurements(args.csv, catalog, args.attention)
    gpu = catalog.gpu(args.gpu) if args.gpu else catalog_gpu(measurements.gpu_name, catalog)
    points = [p for p in measurements.points if p.split == args.split]
    before, after = class_calibration(gpu), load_calibration(gpu, args.calibration_dir)
    print(f"{gpu.name}, {len(points)} points with split={args.split}")
    print(f"before: {before.source}\nafter: {after.source}\n")
    calibrations = [("before", before), ("after", after)]
    print("\n".join(summary(points, gpu, calibrations)))
    print()
    print("\n".join(distribution(points, gpu, calibrations)))
    print()
    print("\n".join(bucket_table(points, gpu, calibrations)))
    for phase in PHASES:
        print()
        print("\n".join(point_table(phase, points, gpu, before, after)))


if __name__ == "__main__":
    raise SystemExit(main())
