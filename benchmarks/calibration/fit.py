"""Fit the planner's efficiency parameters for one GPU to the shard timings of measure.py.

    .venv/bin/python benchmarks/calibration/fit.py benchmarks/calibration/results/h100_sxm.csv

Keeps the timed rows with `split == fit` (no probes, no skipped points) and chooses the parameters
that minimise the sum of squared log ratios of the planner's own prediction to the measurement,
with the catalog's shape of each measured model, the measured TP and pp = 1:

1. decode, through `tandem.planner.cost.decode_step_ms`: `mbu_max`, `mbu_batch_half`,
   `step_overhead_ms` and `layer_overhead_us` (a batch-1 step is weight reads plus the per-layer
   floor, and the four shapes have 28 to 80 layers, so decode pins that floor);
2. prefill, through `prefill_time_ms`, with that floor: `mfu_max`, `t_half_tokens`, `attn_eff`,
   `prefill_overhead_ms`.

The measurements are one GPU's shard with no all-reduce, so a prediction is the cost function's
time less `ReplicaCost.communication_ms` of the same tokens: exactly the all-reduce terms the
planner adds for TP > 1, whatever the all-reduce parameters. `mfu_decode` is not fitted: every
measured decode step is memory-bound (the script finds the lowest `mfu_decode` for which that
holds and writes it into the file's comments), so the data gives it no value; the class default
stays. The search is a Nelder-Mead simplex over transformed parameters (logit for efficiencies in
(0, 1], log for the rest), restarted until it stops improving: deterministic, standard library only.

Writes `planner/data/calibration/<GPU>.yaml` (or `--out`) with the values rounded as shipped, and
prints the fit's residuals; benchmarks/calibration/accuracy.py reports the held-out error.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from tandem.planner import cost
from tandem.planner.calibration import Calibration, class_defaults, default_calibration_dir
from tandem.planner.catalog import Catalog, load_catalog
from tandem.planner.gpu import GpuSpec
from tandem.planner.model import ModelShape

Phase = Literal["prefill", "decode"]
PHASES: tuple[Phase, ...] = ("prefill", "decode")
# In fitting order: decode fixes layer_overhead_us, which prefill then shares.
FITTED: tuple[tuple[Phase, tuple[str, ...]], ...] = (
    ("decode", ("mbu_max", "mbu_batch_half", "step_overhead_ms", "layer_overhead_us")),
    ("prefill", ("mfu_max", "t_half_tokens", "attn_eff", "prefill_overhead_ms")),
)
FRACTIONS = frozenset({"mfu_max", "attn_eff", "mbu_max", "mfu_decode"})  # in (0, 1]; the rest > 0
# Decimals each fitted value is shipped with: well inside the run-to-run spread of the timings.
DECIMALS: Mapping[str, int] = {
    "mbu_max": 3,
    "mbu_batch_half": 0,
    "step_overhead_ms": 2,
    "layer_overhead_us": 1,
    "mfu_max": 3,
    "t_half_tokens": 0,
    "attn_eff": 3,
    "prefill_overhead_ms": 2,
}
DEPTH_CHECK = "depth check"
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Point:
    """One timed grid point: a model shard's full-depth time for a prefill batch or a decode step."""

    model: ModelShape
    model_label: str
    tp: int
    phase: Phase
    batch: int
    seq_len: int  # prompt length (prefill) or context per sequence (decode)
    measured_ms: float
    split: str
    depth_check: bool

    @property
    def tokens(self) -> int:
        """Tokens the pass computes: the batch's prompts (prefill) or one per sequence (decode)."""
        return self.batch * self.seq_len if self.phase == "prefill" else self.batch

    @property
    def label(self) -> str:
        depth = ", all layers" if self.depth_check else ""
        return f"{self.model_label} TP{self.tp} {self.batch}x{self.seq_len}{depth}"


@dataclass(frozen=True)
class Measurements:
    gpu_name: str  # as the CSV names it (nvidia-smi's name)
    torch_version: str
    points: tuple[Point, ...]

    def select(self, phase: Phase, split: str) -> list[Point]:
        return [p for p in self.points if p.phase == phase and p.split == split]


def read_measurements(path: Path, catalog: Catalog) -> Measurements:
    """The timed prefill and decode rows of a measure.py CSV (probes and skipped points dropped)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    gpu_names = {r["gpu_name"] for r in rows}
    if len(gpu_names) != 1:
        raise SystemExit(f"{path}: expected the rows of one GPU, found {sorted(gpu_names)}")
    points = tuple(
        Point(
            model=catalog.model(r["model"]),
            model_label=r["model"],
            tp=int(r["tp"]),
            phase="prefill" if r["phase"] == "prefill" else "decode",
            batch=int(r["batch"]),
            seq_len=int(r["seq_len"]),
            measured_ms=float(r["ms_full_depth"]),
            split=r["split"],
            depth_check=r["notes"].startswith(DEPTH_CHECK),
        )
        for r in rows
        if r["phase"] in PHASES and r["status"] == "ok"
    )
    return Measurements(gpu_names.pop(), rows[0]["torch_version"], points)


def catalog_gpu(csv_gpu_name: str, catalog: Catalog) -> GpuSpec:
    """The catalog entry of nvidia-smi's name (`NVIDIA H100 80GB HBM3` is an alias of H100-80GB)."""
    return catalog.gpu(csv_gpu_name.replace(" ", "-"))


def class_calibration(gpu: GpuSpec) -> Calibration:
    """The planner's calibration of `gpu` before any fit: the defaults of its class."""
    source = f"defaults for class {gpu.calibration_class}"
    return Calibration(**{**class_defaults()[gpu.calibration_class], "source": source})


def shard_ms(point: Point, gpu: GpuSpec, calibration: Calibration) -> float:
    """The planner's time for the measured shard: its cost function less the TP all-reduce."""
    if point.phase == "prefill":
        lengths = [point.seq_len] * point.batch
        total = cost.prefill_time_ms(point.model, gpu, point.tp, 1, lengths, calibration)
    else:
        total = cost.decode_step_ms(point.model, gpu, point.tp, 1, point.batch, point.seq_len, calibration)
    return total - cost.ReplicaCost(point.model, gpu, point.tp, 1, calibration).communication_ms(point.tokens)


def relative_error(point: Point, gpu: GpuSpec, calibration: Calibration) -> float:
    """Predicted over measured, less one: of tokens/s for prefill, of the step time for decode."""
    ratio = shard_ms(point, gpu, calibration) / point.measured_ms
    return 1 / ratio - 1 if point.phase == "prefill" else ratio - 1


def error_summary(errors: Iterable[float]) -> tuple[float, float, float]:
    """(median, 90th percentile (nearest rank), max) of the absolute errors."""
    magnitudes = sorted(abs(e) for e in errors)
    p90 = magnitudes[math.ceil(0.9 * len(magnitudes)) - 1]
    return statistics.median(magnitudes), p90, magnitudes[-1]


def objective(points: Sequence[Point], gpu: GpuSpec, calibration: Calibration) -> float:
    """Sum of squared log ratios, predicted over measured."""
    return sum(math.log(shard_ms(p, gpu, calibration) / p.measured_ms) ** 2 for p in points)


def _to_free(name: str, value: float) -> float:
    """The search's coordinate of a parameter (a start at a bound moves just inside it)."""
    if name in FRACTIONS:
        inside = min(max(value, 1e-6), 1 - 1e-6)
        return math.log(inside / (1 - inside))
    return math.log(max(value, 1e-6))


def _from_free(name: str, u: float) -> float:
    return 1 / (1 + math.exp(-u)) if name in FRACTIONS else math.exp(u)


def _along(origin: Sequence[float], toward: Sequence[float], t: float) -> list[float]:
    """origin + t * (toward - origin)."""
    return [o + t * (w - o) for o, w in zip(origin, toward, strict=True)]


def nelder_mead(
    f: Callable[[list[float]], float], x0: Sequence[float], step: float = 0.5, max_iter: int = 4000
) -> tuple[list[float], float]:
    """Minimise f from x0 with the Nelder-Mead simplex (standard coefficients); returns (x, f(x))."""
    n = len(x0)
    simplex = [list(x0)] + [[x + (step if i == j else 0.0) for j, x in enumerate(x0)] for i in range(n)]
    values = [f(x) for x in simplex]
    for _ in range(max_iter):
        order = sorted(range(n + 1), key=values.__getitem__)
        simplex, values = [simplex[i] for i in order], [values[i] for i in order]
        if values[-1] - values[0] <= 1e-12 * (1 + abs(values[0])):
            break
        centroid = [sum(x[j] for x in simplex[:-1]) / n for j in range(n)]
        worst = simplex[-1]
        reflected = _along(centroid, worst, -1.0)
        fr = f(reflected)
        if fr < values[0]:
            expanded = _along(centroid, worst, -2.0)
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = _along(centroid, worst, -0.5 if fr < values[-1] else 0.5)
            fc = f(contracted)
            if fc < min(fr, values[-1]):
                simplex[-1], values[-1] = contracted, fc
            else:  # shrink towards the best vertex
                simplex = [simplex[0]] + [_along(simplex[0], v, 0.5) for v in simplex[1:]]
                values = [values[0]] + [f(x) for x in simplex[1:]]
    best_index = min(range(n + 1), key=values.__getitem__)
    return simplex[best_index], values[best_index]


def fit_parameters(
    points: Sequence[Point], gpu: GpuSpec, start: Calibration, names: Sequence[str]
) -> Calibration:
    """`start` with `names` set to minimise `objective` over `points`."""

    def trial(u: Sequence[float]) -> Calibration:
        return start.model_copy(update={n: _from_free(n, x) for n, x in zip(names, u, strict=True)})

    u = [_to_free(n, getattr(start, n)) for n in names]
    best = math.inf
    for _ in range(50):  # a collapsed simplex can stall: restart from its best vertex
        u, value = nelder_mead(lambda x: objective(points, gpu, trial(x)), u)
        if value >= best * (1 - 1e-9):
            break
        best = value
    return trial(u)


def rounded(calibration: Calibration) -> Calibration:
    """The calibration as shipped: fitted values to DECIMALS places."""
    return calibration.model_copy(update={n: round(getattr(calibration, n), d) for n, d in DECIMALS.items()})


def fit(measurements: Measurements, gpu: GpuSpec, fixed: Mapping[str, float] | None = None) -> Calibration:
    """The fitted calibration of `gpu` (class defaults for what is not fitted), rounded as shipped.
    `fixed` holds parameters kept at a given value instead of fitted."""
    fixed = fixed or {}
    calibration = Calibration(**{**class_calibration(gpu).model_dump(), **fixed})  # validates `fixed`
    for phase, names in FITTED:
        free = [n for n in names if n not in fixed]
        calibration = fit_parameters(measurements.select(phase, "fit"), gpu, calibration, free)
    return rounded(calibration)


def _fixed_parameter(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    if name not in DECIMALS:
        raise argparse.ArgumentTypeError(f"{name!r} is not a fitted parameter ({', '.join(DECIMALS)})")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=NUMBER") from None


def lowest_mfu_decode(points: Sequence[Point], gpu: GpuSpec, calibration: Calibration) -> float:
    """The lowest `mfu_decode` at which every decode point stays memory-bound (its time the same as
    with `mfu_decode` = 1): the only thing the measurements say of it."""

    def memory_bound(mfu: float) -> bool:
        trial = calibration.model_copy(update={"mfu_decode": mfu})
        return all(
            math.isclose(shard_ms(p, gpu, trial), shard_ms(p, gpu, ceiling), rel_tol=1e-12) for p in points
        )

    ceiling = calibration.model_copy(update={"mfu_decode": 1.0})
    low, high = 1e-4, 1.0
    for _ in range(40):
        low, high = (low, (low + high) / 2) if memory_bound((low + high) / 2) else ((low + high) / 2, high)
    return high


def render(
    calibration: Calibration, gpu: GpuSpec, measurements: Measurements, mfu_decode_floor: float
) -> str:
    """The YAML file: the source line, the fitted keys with their meaning, how the fit did."""
    lines = [
        f"# {gpu.name}: efficiencies fitted by benchmarks/calibration/fit.py. Do not edit by hand; re-run it",
        "# (benchmarks/calibration/README.md, 'Fit and accuracy'). Keys not set here come from the class",
        f"# defaults ({gpu.calibration_class} in defaults.yaml), including mfu_decode: every measured decode",
        f"# step is memory-bound for any mfu_decode >= {math.ceil(mfu_decode_floor * 100) / 100:.2f}, so the "
        "data gives it no value.",
    ]
    for phase, _ in FITTED:
        points = measurements.select(phase, "fit")
        median, p90, worst = error_summary(relative_error(p, gpu, calibration) for p in points)
        what = "tokens/s" if phase == "prefill" else "step time"
        lines.append(
            f"# {phase}: {len(points)} fit points, {what} |error| median {median:.1%}, p90 {p90:.1%}, "
            f"max {worst:.1%}"
        )
    lines.append(f"source: {json.dumps(calibration.source)}")
    fields = Calibration.model_fields
    for _, names in FITTED:
        for name in names:
            value = f"{getattr(calibration, name):.{DECIMALS[name]}f}"
            lines.append(f"{name}: {value}  # {fields[name].description}")
    return "\n".join(lines) + "\n"


def _relative(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(REPO)) if resolved.is_relative_to(REPO) else str(resolved)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "csv", type=Path, help="measure.py output, e.g. benchmarks/calibration/results/h100_sxm.csv"
    )
    parser.add_argument("--gpu", help="catalog GPU name (default: from the CSV's gpu_name)")
    parser.add_argument(
        "--out", type=Path, help="YAML to write (default: the planner's data/calibration/<GPU>.yaml)"
    )
    parser.add_argument("--date", default=datetime.date.today().isoformat(), help="date for the source line")
    parser.add_argument(
        "--fix",
        type=_fixed_parameter,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="keep a parameter at VALUE instead of fitting it (e.g. layer_overhead_us=0); repeatable",
    )
    args = parser.parse_args(argv)

    catalog = load_catalog()
    measurements = read_measurements(args.csv, catalog)
    gpu = catalog.gpu(args.gpu) if args.gpu else catalog_gpu(measurements.gpu_name, catalog)
    options = [f"--fix {name}={value:g}" for name, value in args.fix]
    options += [
        *(["--gpu", args.gpu] if args.gpu else []),
        *(["--out", _relative(args.out)] if args.out else []),
    ]
    command = " ".join(["python", "benchmarks/calibration/fit.py", _relative(args.csv), *options])
    fitted_points = sum(len(measurements.select(phase, "fit")) for phase in PHASES)
    source = (
        f"fit of {args.date}: {_relative(args.csv)} ({measurements.gpu_name}, torch "
        f"{measurements.torch_version}, {fitted_points} timed points with split=fit), by `{command}`"
    )
    try:
        calibration = fit(measurements, gpu, dict(args.fix)).model_copy(update={"source": source})
    except ValidationError as exc:
        parser.error(f"--fix: {exc}")
    floor = lowest_mfu_decode(measurements.select("decode", "fit"), gpu, calibration)
    text = render(calibration, gpu, measurements, floor)
    out = args.out or default_calibration_dir() / f"{gpu.name}.yaml"
    out.write_text(text)
    print(text, end="")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
