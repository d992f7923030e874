"""Fit the planner's efficiency parameters for one GPU to the shard timings of measure.py.

    .venv/bin/python benchmarks/calibration/fit.py benchmarks/calibration/results/h100_sxm.csv

Keeps the timed rows with `split == fit` (no probes, no skipped points), timed with the fastest of
SDPA's attention kernels (`--attention flash`: with FlashAttention-2 alone), and chooses the
parameters that minimise the sum of squared log ratios of the planner's own prediction to the
measurement, with the catalog's shape of each measured model, the measured TP and pp = 1, in the
stages of `STAGES`:

1. decode steps of one sequence over at most 2048 tokens, through
   `tandem.planner.cost.decode_step_ms`: `mbu_max`, `layer_overhead_us` and `step_overhead_ms` (such
   a step is the weights read once plus the per-layer floor, and the shards have 28 to 80 layers);
2. every decode step: `mbu_batch_half` and `mfu_decode` (what the batch adds to the linear layers),
   `kv_read_eff` (the batch's KV reads) and `kv_stream_eff` (one sequence's KV stream);
3. prefill, through `prefill_time_ms`, with that floor: `mfu_max`, `t_half_tokens`, `attn_eff`,
   `prefill_overhead_ms`.

The measurements are one GPU's shard with no all-reduce, so a prediction is the cost function's
time less `ReplicaCost.communication_ms` of the same tokens: exactly the all-reduce terms the
planner adds for TP > 1, whatever the all-reduce parameters. The search is a Nelder-Mead simplex
over transformed parameters (logit for efficiencies in (0, 1], log for the rest), restarted until
it stops improving: deterministic, standard library only.

With `--kernels-from GPU` the keys that measure the attention kernel and the decode GEMMs
(`KERNEL_KEYS`) are not fitted but taken from that GPU's shipped fit: for a CSV that timed
FlashAttention-2 only (h100_sxm.csv) on a chip with the same SMs as one whose CSV timed every
kernel (the H200's). Another class or peak is refused.

With `--allreduce CSV` (benchmarks/calibration/allreduce.py's output) it also fits the
tensor-parallel all-reduce, `allreduce_latency_us` and `allreduce_eff`, through the planner's own
`tandem.planner.cost.allreduce_ms` (latency + ring bytes / (link bandwidth x efficiency)), to the
eager rows with `split == fit` of every TP size, by the same objective (squared log ratios) and
search. A CSV of another GPU with the same interconnect (kind and link bandwidth) carries its fit
over, and the file's comments say so; a different interconnect is refused.

Writes `planner/data/calibration/<GPU>.yaml` (or `--out`) with the values rounded as shipped, and
prints the fit's residuals; benchmarks/calibration/accuracy.py reports the held-out error.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import functools
import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from tandem.planner import cost
from tandem.planner.calibration import Calibration, class_defaults, default_calibration_dir, load_calibration
from tandem.planner.catalog import Catalog, load_catalog
from tandem.planner.gpu import GpuSpec
from tandem.planner.model import ModelShape

Phase = Literal["prefill", "decode"]
Kernel = Literal["fastest", "flash"]
KERNEL_COLUMNS: Mapping[Kernel, str] = {"fastest": "ms_full_depth", "flash": "ms_full_depth_flash"}
PHASES: tuple[Phase, ...] = ("prefill", "decode")


@dataclass(frozen=True)
class Stage:
    """One step of the fit: `names` fitted to the `phase` fit points of at most `max_batch` sequences
    of at most `max_context` tokens (None: any), the parameters of the earlier stages held."""

    phase: Phase
    names: tuple[str, ...]
    max_batch: int | None = None
    max_context: int | None = None

    def takes(self, point: Point) -> bool:
        return (self.max_batch is None or point.batch <= self.max_batch) and (
            self.max_context is None or point.seq_len <= self.max_context
        )


# In fitting order. A step of one sequence over a short context is the weights read once and the
# per-layer floor (its KV read takes ~1 % of it): those pin the two. The rest of decode then sets
# what the batch and the context add (the weight reads' decay, compute-bound GEMMs, the batch's KV
# reads, one stream's); prefill shares the per-layer floor.
STAGES: tuple[Stage, ...] = (
    Stage("decode", ("mbu_max", "layer_overhead_us", "step_overhead_ms"), max_batch=1, max_context=2048),
    Stage("decode", ("mbu_batch_half", "mfu_decode", "kv_read_eff", "kv_stream_eff")),
    Stage("prefill", ("mfu_max", "t_half_tokens", "attn_eff", "prefill_overhead_ms")),
)
# In (0, 1]; the rest > 0.
FRACTIONS = frozenset(
    {"mfu_max", "attn_eff", "mbu_max", "kv_read_eff", "kv_stream_eff", "mfu_decode", "allreduce_eff"}
)
# Where the search starts for parameters whose class default is 0 (the log coordinate of 0 lies
# too far from any value the data could hold for the simplex to get there).
SEARCH_STARTS: Mapping[str, float] = {"layer_overhead_us": 50.0}
# Decimals each fitted value is shipped with: well inside the run-to-run spread of the timings.
DECIMALS: Mapping[str, int] = {
    "mbu_max": 3,
    "mbu_batch_half": 0,
    "mfu_decode": 3,
    "kv_read_eff": 3,
    "kv_stream_eff": 3,
    "step_overhead_ms": 2,
    "layer_overhead_us": 1,
    "mfu_max": 3,
    "t_half_tokens": 0,
    "attn_eff": 3,
    "prefill_overhead_ms": 2,
}
# The keys a FlashAttention-2-only CSV would misstate: the attention kernel's (prefill FLOPs, the
# batch's KV reads) and the decode GEMMs' compute rate, which the fit sets from the same steps (its
# large batches read their KV at FA2's rate). A fit of the same SMs that timed every kernel gives
# them (--kernels-from): shares of a chip's own peak and HBM bandwidth.
KERNEL_KEYS = ("attn_eff", "kv_read_eff", "mfu_decode")
ALLREDUCE_DECIMALS: Mapping[str, int] = {"allreduce_latency_us": 1, "allreduce_eff": 3}
# The all-reduce rows fitted. Eager calls, timed back to back, take the longer of the host's launch
# (~16 us through torch.distributed) and the collective's GPU time: an upper bound of the GPU time a
# forward pass pays, with the host running ahead. Graph replays of the same calls took ~10 us more
# per call at small sizes and varied more from run to run (benchmarks/calibration/README.md).
ALLREDUCE_MODE = "eager"
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


def read_measurements(path: Path, catalog: Catalog, kernel: Kernel = "fastest") -> Measurements:
    """The timed prefill and decode rows of a measure.py CSV (probes and skipped points dropped),
    timed with the fastest attention kernel (`ms_full_depth`) or with flash (`ms_full_depth_flash`;
    a CSV from before the other kernels were timed has only flash)."""
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
            measured_ms=float(r.get(KERNEL_COLUMNS[kernel]) or r["ms_full_depth"]),
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
    loss: Callable[[Calibration], float], start: Calibration, names: Sequence[str]
) -> Calibration:
    """`start` with `names` set to minimise `loss`."""

    def trial(u: Sequence[float]) -> Calibration:
        return start.model_copy(update={n: _from_free(n, x) for n, x in zip(names, u, strict=True)})

    u = [_to_free(n, getattr(start, n)) for n in names]
    best = math.inf
    for _ in range(50):  # a collapsed simplex can stall: restart from its best vertex
        u, value = nelder_mead(lambda x: loss(trial(x)), u)
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
    calibration = Calibration(**{**class_calibration(gpu).model_dump(), **SEARCH_STARTS, **fixed})
    for stage in STAGES:
        free = [n for n in stage.names if n not in fixed]
        points = [p for p in measurements.select(stage.phase, "fit") if stage.takes(p)]
        loss = functools.partial(objective, points, gpu)
        calibration = fit_parameters(loss, calibration, free)
    return rounded(calibration)


@dataclass(frozen=True)
class AllReducePoint:
    """One timed all-reduce of allreduce.py: `message_bytes` summed over the first `tp` GPUs."""

    tp: int
    mode: str  # graph | eager
    message_bytes: int
    measured_ms: float
    split: str


@dataclass(frozen=True)
class AllReduceMeasurements:
    gpu_name: str  # as the CSV names it (nvidia-smi's name)
    world_size: int
    nccl_version: str
    points: tuple[AllReducePoint, ...]

    def select(self, split: str, mode: str = ALLREDUCE_MODE) -> list[AllReducePoint]:
        return [p for p in self.points if p.split == split and p.mode == mode]

    @property
    def label(self) -> str:
        return f"{self.gpu_name} x{self.world_size}, NCCL {self.nccl_version}"


def read_allreduce(path: Path) -> AllReduceMeasurements:
    """The rows of an allreduce.py CSV."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or len({r["gpu_name"] for r in rows}) != 1:
        raise SystemExit(f"{path}: expected the rows of one GPU")
    points = tuple(
        AllReducePoint(int(r["tp"]), r["mode"], int(r["message_bytes"]), float(r["ms"]), r["split"])
        for r in rows
    )
    first = rows[0]
    return AllReduceMeasurements(first["gpu_name"], int(first["world_size"]), first["nccl_version"], points)


@dataclass(frozen=True)
class AllReduceSource:
    """All-reduce measurements, the CSV they came from and the catalog GPU they ran on."""

    path: Path
    measurements: AllReduceMeasurements
    gpu: GpuSpec


def allreduce_error(point: AllReducePoint, gpu: GpuSpec, calibration: Calibration) -> float:
    """Predicted over measured time, less one."""
    return cost.allreduce_ms(point.message_bytes, point.tp, gpu, calibration) / point.measured_ms - 1


def allreduce_objective(points: Sequence[AllReducePoint], gpu: GpuSpec, calibration: Calibration) -> float:
    """Sum of squared log ratios, predicted over measured."""
    return sum(math.log1p(allreduce_error(p, gpu, calibration)) ** 2 for p in points)


def measured_gpu(measurements: AllReduceMeasurements, gpu: GpuSpec, catalog: Catalog) -> GpuSpec:
    """The catalog GPU the all-reduce ran on; it must link its GPUs as `gpu` does for its fit to
    apply to `gpu` (the planner's all-reduce time depends on nothing else of the GPU)."""
    source = catalog_gpu(measurements.gpu_name, catalog)
    if source.interconnect != gpu.interconnect:
        raise SystemExit(
            f"all-reduce measured on {source.name} ({source.interconnect}) does not carry over to "
            f"{gpu.name} ({gpu.interconnect})"
        )
    return source


def fit_allreduce(measurements: AllReduceMeasurements, source: GpuSpec, start: Calibration) -> Calibration:
    """`start` with the all-reduce parameters fitted to the measurements made on `source`,
    rounded as shipped."""
    loss = functools.partial(allreduce_objective, measurements.select("fit"), source)
    fitted = fit_parameters(loss, start, list(ALLREDUCE_DECIMALS))
    return fitted.model_copy(update={n: round(getattr(fitted, n), d) for n, d in ALLREDUCE_DECIMALS.items()})


def same_sms(gpu: GpuSpec, source: GpuSpec) -> GpuSpec:
    """`source`, whose attention kernel keys `gpu` may take: a chip of the same class and peak."""
    if (source.calibration_class, source.bf16_tflops) != (gpu.calibration_class, gpu.bf16_tflops):
        raise SystemExit(
            f"attention kernel keys of {source.name} ({source.calibration_class}, {source.bf16_tflops:g} "
            f"TFLOP/s) do not carry over to {gpu.name} ({gpu.calibration_class}, {gpu.bf16_tflops:g} TFLOP/s)"
        )
    return source


def _fixed_parameter(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    if name not in DECIMALS:
        raise argparse.ArgumentTypeError(f"{name!r} is not a fitted parameter ({', '.join(DECIMALS)})")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=NUMBER") from None


def render(
    calibration: Calibration,
    gpu: GpuSpec,
    measurements: Measurements,
    allreduce: AllReduceSource | None = None,
    kernels_from: GpuSpec | None = None,
) -> str:
    """The YAML file: the source line, the fitted keys with their meaning, how the fit did."""
    lines = [
        f"# {gpu.name}: efficiencies fitted by benchmarks/calibration/fit.py. Do not edit by hand; re-run it",
        "# (benchmarks/calibration/README.md, 'Fit and accuracy'). Keys not set here come from the class",
        f"# defaults ({gpu.calibration_class} in defaults.yaml).",
    ]
    for phase in PHASES[::-1]:
        points = measurements.select(phase, "fit")
        median, p90, worst = error_summary(relative_error(p, gpu, calibration) for p in points)
        what = "tokens/s" if phase == "prefill" else "step time"
        lines.append(
            f"# {phase}: {len(points)} fit points, {what} |error| median {median:.1%}, p90 {p90:.1%}, "
            f"max {worst:.1%}"
        )
    decimals = dict(DECIMALS)
    if kernels_from:
        lines += [
            f"# {', '.join(KERNEL_KEYS)} are carried over from {kernels_from.name}, whose measurements time",
            "# the fastest of SDPA's attention kernels (this CSV: FlashAttention-2 only); both chips have",
            f"# the same SMs ({gpu.bf16_tflops:g} TFLOP/s), and the keys are shares of a chip's own peak "
            "and HBM bandwidth.",
        ]
    if allreduce:
        lines += _allreduce_comments(calibration, gpu, allreduce)
        decimals |= ALLREDUCE_DECIMALS
    lines.append(f"source: {json.dumps(calibration.source)}")
    fields = Calibration.model_fields
    for name, places in decimals.items():
        lines.append(f"{name}: {getattr(calibration, name):.{places}f}  # {fields[name].description}")
    return "\n".join(lines) + "\n"


def _allreduce_comments(calibration: Calibration, gpu: GpuSpec, allreduce: AllReduceSource) -> list[str]:
    points = allreduce.measurements.select("fit")
    median, p90, worst = error_summary(allreduce_error(p, allreduce.gpu, calibration) for p in points)
    sizes = sorted({p.tp for p in points})
    lines = [
        f"# all-reduce: {len(points)} fit points ({ALLREDUCE_MODE} mode, TP {sizes[0]}-{sizes[-1]}) of "
        f"{_relative(allreduce.path)}",
        f"# ({allreduce.measurements.label}), time |error| median {median:.1%}, p90 {p90:.1%}, "
        f"max {worst:.1%}",
    ]
    if allreduce.gpu.name != gpu.name:
        link = gpu.interconnect
        lines += [
            f"# The all-reduce keys are carried over from {allreduce.gpu.name} (no multi-GPU {gpu.name} "
            "measurement):",
            f"# both link their GPUs by {link.kind} at {link.link_bandwidth_gbps:g} GB/s per direction.",
        ]
    return lines


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
        "--allreduce",
        type=Path,
        metavar="CSV",
        help="also fit the all-reduce keys to allreduce.py's CSV (of this GPU or one linked alike)",
    )
    parser.add_argument(
        "--attention",
        choices=list(KERNEL_COLUMNS),
        default="fastest",
        help="fit the times with the fastest SDPA attention kernel (default) or with flash alone",
    )
    parser.add_argument(
        "--kernels-from",
        metavar="GPU",
        help=f"take {', '.join(KERNEL_KEYS)} from that GPU's shipped fit (same SMs; its CSV timed "
        "the fastest attention kernel, this one flash only) instead of fitting them",
    )
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
    measurements = read_measurements(args.csv, catalog, args.attention)
    gpu = catalog.gpu(args.gpu) if args.gpu else catalog_gpu(measurements.gpu_name, catalog)
    options = [f"--fix {name}={value:g}" for name, value in args.fix]
    kernels_from = same_sms(gpu, catalog.gpu(args.kernels_from)) if args.kernels_from else None
    fixed = dict(args.fix)
    if kernels_from:
        carried = load_calibration(kernels_from)
        fixed = {name: getattr(carried, name) for name in KERNEL_KEYS} | fixed
    options += [
        *(["--attention", args.attention] if args.attention != "fastest" else []),
        *(["--kernels-from", args.kernels_from] if args.kernels_from else []),
        *(["--allreduce", _relative(args.allreduce)] if args.allreduce else []),
        *(["--gpu", args.gpu] if args.gpu else []),
        *(["--out", _relative(args.out)] if args.out else []),
    ]
    command = " ".join(["python", "benchmarks/calibration/fit.py", _relative(args.csv), *options])
    fitted_points = sum(len(measurements.select(phase, "fit")) for phase in PHASES)
    source = (
        f"fit of {args.date}: {_relative(args.csv)} ({measurements.gpu_name}, torch "
        f"{measurements.torch_version}, {fitted_points} timed points with split=fit)"
    )
    allreduce = None
    if args.allreduce:
        collective = read_allreduce(args.allreduce)
        allreduce = AllReduceSource(args.allreduce, collective, measured_gpu(collective, gpu, catalog))
        source += (
            f"; all-reduce: {_relative(args.allreduce)} ({collective.label}, "
            f"{len(collective.select('fit'))} {ALLREDUCE_MODE} points with split=fit)"
        )
    if kernels_from:
        source += f"; {', '.join(KERNEL_KEYS)}: the shipped fit of {kernels_from.name}"
    try:
        calibration = fit(measurements, gpu, fixed)
    except ValidationError as exc:
        parser.error(f"--fix: {exc}")
    if allreduce:
        calibration = fit_allreduce(allreduce.measurements, allreduce.gpu, calibration)
    calibration = calibration.model_copy(update={"source": f"{source}, by `{command}`"})
    text = render(calibration, gpu, measurements, allreduce, kernels_from)
    out = args.out or default_calibration_dir() / f"{gpu.name}.yaml"
    out.write_text(text)
    print(text, end="")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
