"""Summarise a calibration CSV from measure.py as the Markdown tables of the README.

    python benchmarks/calibration/summarize.py results/h100_sxm.csv [--repeat results/h100_sxm_run1.csv]

With --repeat, also reports the run-to-run spread over the points both runs measured.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path

Row = dict[str, str]
SPEC_NOTE_KEYS = ("spec dense bf16 ", "spec HBM ")


def load(path: Path) -> list[Row]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def series(rows: Iterable[Row]) -> list[tuple[str, str]]:
    """(model, tp) pairs in the order the run measured them."""
    seen: dict[tuple[str, str], None] = {}
    for r in rows:
        if r["phase"] != "probe":
            seen[(r["model"], r["tp"])] = None
    return list(seen)


def is_grid_point(r: Row) -> bool:
    return "depth check" not in r["notes"]


def spec_of(notes: str) -> float:
    for key in SPEC_NOTE_KEYS:
        if key in notes:
            return float(notes.split(key, 1)[1].split()[0])
    return 0.0


def probe_table(rows: list[Row]) -> list[str]:
    lines = ["| probe | ms | achieved | spec | of spec |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if r["phase"] != "probe":
            continue
        is_gemm = r["model"].startswith("gemm")
        value = float(r["achieved_tflops"] if is_gemm else r["achieved_gbps"])
        unit = "TFLOP/s" if is_gemm else "GB/s"
        spec = spec_of(r["notes"])
        share = f"{value / spec:.0%}" if spec else "n/a"
        lines.append(
            f"| {r['model']} | {float(r['ms_full_depth']):.3f} | {value:.0f} {unit} | {spec:g} | {share} |"
        )
    return lines


def prefill_table(rows: list[Row]) -> list[str]:
    """Prefill tokens/s (and achieved TFLOP/s) at batch 1, per prompt length and model shard."""
    models = series(rows)
    header = "| prompt tokens | " + " | ".join(f"{m} TP{tp}" for m, tp in models) + " |"
    lines = [header, "| ---: |" + " ---: |" * len(models)]
    lengths = sorted({int(r["seq_len"]) for r in rows if r["phase"] == "prefill"})
    for length in lengths:
        cells = []
        for model, tp in models:
            hit = [
                r
                for r in rows
                if (r["model"], r["tp"], r["phase"]) == (model, tp, "prefill")
                and r["batch"] == "1"
                and int(r["seq_len"]) == length
                and is_grid_point(r)
                and r["status"] == "ok"
            ]
            if hit:
                r = hit[0]
                tokens_s = int(r["tokens"]) / float(r["ms_full_depth"]) * 1e3
                cells.append(f"{tokens_s:,.0f} tok/s ({float(r['achieved_tflops']):.0f} TF/s)")
            else:
                cells.append("—")
        lines.append(f"| {length} | " + " | ".join(cells) + " |")
    return lines


def prefill_batch_table(rows: list[Row], model: str, tp: str) -> list[str]:
    """Prefill ms at full depth by batch and prompt length, for one model shard."""
    mine = [
        r
        for r in rows
        if (r["model"], r["tp"], r["phase"]) == (model, tp, "prefill")
        and is_grid_point(r)
        and r["status"] == "ok"
    ]
    batches = sorted({int(r["batch"]) for r in mine})
    lengths = sorted({int(r["seq_len"]) for r in mine})
    lines = [
        "| prompt tokens \\ batch | " + " | ".join(str(b) for b in batches) + " |",
        "| ---: |" + " ---: |" * len(batches),
    ]
    for length in lengths:
        cells = {
            int(r["batch"]): f"{float(r['ms_full_depth']):.1f}" for r in mine if int(r["seq_len"]) == length
        }
        lines.append(f"| {length} | " + " | ".join(cells.get(b, "—") for b in batches) + " |")
    return lines


def decode_table(rows: list[Row], model: str, tp: str) -> list[str]:
    """Decode step ms at full depth by batch and context, for one model shard."""
    mine = [
        r for r in rows if (r["model"], r["tp"], r["phase"]) == (model, tp, "decode") and is_grid_point(r)
    ]
    contexts = sorted({int(r["seq_len"]) for r in mine})
    batches = sorted({int(r["batch"]) for r in mine})
    lines = [
        "| batch \\ context | " + " | ".join(str(c) for c in contexts) + " |",
        "| ---: |" + " ---: |" * len(contexts),
    ]
    for batch in batches:
        cells = []
        for context in contexts:
            hit = [r for r in mine if int(r["batch"]) == batch and int(r["seq_len"]) == context]
            ok = hit and hit[0]["status"] == "ok"
            cells.append(f"{float(hit[0]['ms_full_depth']):.2f}" if ok else "skip")
        lines.append(f"| {batch} | " + " | ".join(cells) + " |")
    return lines


def depth_check_table(rows: list[Row]) -> list[str]:
    """All-layer timings against the few-layer timing scaled to depth, at the same point."""
    lines = [
        "| model | phase | batch x len | few layers scaled (ms) | all layers (ms) | difference |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    key_fields = ("model", "tp", "phase", "batch", "seq_len")
    scaled = {tuple(r[k] for k in key_fields): r for r in rows if is_grid_point(r) and r["status"] == "ok"}
    for r in rows:
        if is_grid_point(r) or r["status"] != "ok":
            continue
        base = scaled.get(tuple(r[k] for k in key_fields))
        if base is None:
            continue
        few, full = float(base["ms_full_depth"]), float(r["ms_full_depth"])
        lines.append(
            f"| {r['model']} TP{r['tp']} | {r['phase']} | {r['batch']} x {r['seq_len']} | "
            f"{few:.2f} | {full:.2f} | {full / few - 1:+.1%} |"
        )
    return lines


def spread_lines(rows: list[Row], repeat: list[Row]) -> list[str]:
    key_fields = ("model", "tp", "phase", "batch", "seq_len", "layers_timed")
    other = {tuple(r[k] for k in key_fields): r for r in repeat if r["status"] == "ok"}
    lines = [
        "| phase | points | median abs. difference | 90th percentile | max |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for phase in ("prefill", "decode"):
        diffs = sorted(
            abs(float(r["ms_full_depth"]) / float(twin["ms_full_depth"]) - 1)
            for r in rows
            if r["phase"] == phase
            and r["status"] == "ok"
            and (twin := other.get(tuple(r[k] for k in key_fields))) is not None
        )
        if diffs:
            p90 = diffs[int(0.9 * (len(diffs) - 1))]
            lines.append(
                f"| {phase} | {len(diffs)} | {statistics.median(diffs):.1%} | {p90:.1%} | {diffs[-1]:.1%} |"
            )
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("csv", type=Path)
    parser.add_argument("--repeat", type=Path, help="a second run of the same grid, for the spread")
    args = parser.parse_args(argv)
    rows = load(args.csv)
    out = ["### Probes", "", *probe_table(rows), "", "### Prefill, batch 1 (full depth, one shard)", ""]
    out += prefill_table(rows)
    for model, tp in series(rows):
        out += ["", f"### Prefill ms by batch, {model} TP{tp}", "", *prefill_batch_table(rows, model, tp)]
    for model, tp in series(rows):
        out += ["", f"### Decode step ms, {model} TP{tp}", "", *decode_table(rows, model, tp)]
    out += ["", "### Depth check", "", *depth_check_table(rows)]
    if args.repeat:
        out += ["", "### Run-to-run spread", "", *spread_lines(rows, load(args.repeat))]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
