"""The digital twin on the devcluster: the planner's pools deployed as simulator InferencePools, with
the operator, the router and ``tandem load``, all real processes. Three tables.

For each workload (sim/twin.py's chat, RAG and code on Llama-3.1-8B and 70B, H100s) it starts a
devcluster (``$KUBEBUILDER_ASSETS``), runs ``tandem operator`` on it, and applies one simulator
pool per way of serving it: the operator plans each and renders ``tandem sim`` engines timed by
the plan, run ``--speed`` times faster than modelled (cluster_load.py says how the figures are
brought back to the plan's time). Load goes to the router pod.

1. **Accuracy**: Tandem's plan, and the planner's disaggregated pools as (c) below runs them, at
   the planned rate: measured p90 TTFT and ITL against the plan's predictions (ratios; the target
   band is 0.75-1.25), and whether the queues stayed bounded with no request failed (a plan the
   planner calls feasible must not overload its own simulator).
2. **Goodput per GPU**: the highest rate at which 90 % of requests meet both targets, by a short
   sweep (from the planned rate: up by half until a probe misses, at most ``--probes`` times, then
   ``--probes`` bisection steps), per GPU, for (a) Tandem's plan, (b) aggregated serving on the
   same GPUs, (c) the disaggregated plan with a fixed 1,000-token threshold (Dynamo's default), (d)
   the same with sageLLM's 800-character rule (as tokens of the load's prompts: 800 over their mean
   characters per token); as ratios to (b). Where (a) is aggregated on the GPUs (b) would take, (b)
   is (a) and is not run again.
3. **Load step** (``mode: Planner``, load_step.py): the planned rate, three times it for two minutes,
   then the planned rate again, on a clock that is not compressed: when attainment is back at 90 %,
   the peak replicas, the scale-down; the run's chart (``tandem load``'s, with replicas) as a PNG.

Every row says how busy the pool's processes were and how long they waited for a CPU
(cpu_share.py): a row whose engines were starved says its figures are unreliable.

    .venv/bin/python benchmarks/twin/cluster.py                  # rag-8b, the three tables
    .venv/bin/python benchmarks/twin/cluster.py --full           # all six workloads
    .venv/bin/python benchmarks/twin/cluster.py --quick          # table 1 only, a short window
    .venv/bin/python benchmarks/twin/cluster.py --only chat-8b --tables 1 2 --speed 2

It needs root (the devcluster's pods are local processes in private mount namespaces), and gives
the pods and itself the CPU weight of ``--priority`` (cluster_pools.py, ``renice``).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster_load import Probe, probe
from cluster_pools import TwinCluster, pool_manifest, reniced
from load_step import StepResult, load_step

from tandem.api import DisaggregationMode, InferencePoolStatus
from tandem.devcluster.settings import TEST_PROBE_POLL_SECONDS
from tandem.load.prompts import WORDS
from tandem.planner import plan
from tandem.sim.twin import REFERENCE_WORKLOADS, Workload

BAND = (0.75, 1.25)
MEETING = 90.0  # percent of requests that must meet both targets
SAGE_CHARS = 800
CLUSTER_WORKLOADS = tuple(w for w in REFERENCE_WORKLOADS if not w.name.startswith("issue"))
WORKLOADS = {w.name: w for w in CLUSTER_WORKLOADS}
UNRELIABLE = "  UNRELIABLE (starved)"
# Table 1's rows: Tandem's plan, and the planner's disaggregated pools (with (c)'s threshold).
MEASURED_AT_PLANNED_RATE = (0, 2)


def sage_threshold_tokens() -> int:
    """sageLLM's 800-character rule in tokens of the load's prompts (one token per word)."""
    return round(SAGE_CHARS / statistics.fmean(len(word) for word in WORDS))


@dataclass(frozen=True)
class Way:
    """One way of serving a workload: a label and the pool spec sections it overrides."""

    label: str
    spec: dict[str, Any]


def ways(aggregated_replicas: int, aggregated_tp: int) -> list[Way]:
    sage = sage_threshold_tokens()
    return [
        Way("(a) Tandem's plan", {}),
        Way(
            "(b) aggregated, same GPUs",
            {
                "disaggregation": {"mode": "Never"},
                "decode": {"replicas": aggregated_replicas, "tensorParallel": aggregated_tp},
            },
        ),
        Way(
            "(c) PD, 1,000-token threshold",
            {"disaggregation": {"mode": "Always", "promptTokensThreshold": 1000}},
        ),
        Way(
            f"(d) PD, {SAGE_CHARS}-char rule ({sage} tokens)",
            {"disaggregation": {"mode": "Always", "promptTokensThreshold": sage}},
        ),
    ]


def layout(status: InferencePoolStatus) -> str:
    planned = status.plan
    assert planned is not None
    parts = []
    for role, part, actual in (("P", planned.prefill, status.prefill), ("D", planned.decode, status.decode)):
        replicas = actual.replicas if actual is not None else 0
        if part is not None and replicas:
            parts.append(f"{role} {replicas}x TP{part.tensor_parallel}")
    return " + ".join(parts)


def deployment(status: InferencePoolStatus) -> str:
    """What runs (status.plan.recommended is the planner's choice, which mode Always overrides)."""
    return "Disaggregated" if status.prefill is not None and status.prefill.replicas else "Aggregated"


def gpus(status: InferencePoolStatus) -> int:
    """GPUs the pool's engines stand for: each role's replicas times its GPUs per replica."""
    planned = status.plan
    assert planned is not None
    total = 0
    for part, actual in ((planned.prefill, status.prefill), (planned.decode, status.decode)):
        if part is not None and actual is not None:
            total += actual.replicas * part.tensor_parallel * part.pipeline_parallel
    return total


@dataclass(frozen=True)
class Accuracy:
    workload: str
    deployment: str
    layout: str
    rps: float
    predicted_ttft_ms: float
    ttft_ms: float
    predicted_itl_ms: float
    itl_ms: float
    bounded: bool
    requests: int
    cpu: str
    starved: bool

    @property
    def ratios(self) -> tuple[float, float]:
        return self.ttft_ms / self.predicted_ttft_ms, self.itl_ms / self.predicted_itl_ms

    @property
    def inside(self) -> bool:
        return all(BAND[0] <= ratio <= BAND[1] for ratio in self.ratios)


@dataclass(frozen=True)
class Goodput:
    workload: str
    way: str
    layout: str
    gpus: int
    rps: float  # the highest rate that met the targets
    probes: int  # 0: the same pools as (a), not run again
    lower_bound: bool  # every probe met: the goodput is at least this
    cpu: str  # the last probe's
    starved: bool

    @property
    def per_gpu(self) -> float:
        return self.rps / self.gpus if self.gpus else math.nan


@dataclass
class Report:
    speed: float
    accuracy: list[Accuracy] = field(default_factory=list)
    goodput: list[Goodput] = field(default_factory=list)
    steps: list[tuple[str, StepResult]] = field(default_factory=list)

    @property
    def unreliable(self) -> int:
        rows: list[Accuracy | Goodput | StepResult] = [*self.accuracy, *self.goodput]
        rows += [step for _, step in self.steps]
        return sum(row.starved for row in rows)

    @property
    def outside(self) -> int:
        return sum(not (row.inside and row.bounded) for row in self.accuracy)


def progress(text: str) -> None:
    print(f"  .. {text}", file=sys.stderr, flush=True)


Run = Callable[[float, float], Probe]  # (req/s, seconds of the plan's time) -> the probe


class Bench:
    def __init__(self, cluster: TwinCluster, args: argparse.Namespace, report: Report) -> None:
        self.cluster = cluster
        self.args = args
        self.report = report

    @contextmanager
    def pool(
        self, name: str, workload: Workload, spec: dict[str, Any]
    ) -> Iterator[tuple[InferencePoolStatus, Run]]:
        """The pool applied and Ready, and a function that probes it. Deleted afterwards."""
        manifest = pool_manifest(name, workload, speed=self.args.speed, spec=spec)
        status = self.cluster.apply(manifest, say=lambda _: None)
        try:
            url = self.cluster.router_url(name)

            def processes() -> list[tuple[str, str, int]]:
                return [(p.pod, p.role, p.pid) for p in self.cluster.prioritize(name, self.args.priority)]

            def run(rps: float, seconds: float) -> Probe:
                measured = probe(url, workload, rps, seconds, self.args.speed, processes, seed=self.args.seed)
                progress(
                    f"{name} at {rps:.2f} req/s: {measured.attainment:.0%} met, p90 TTFT "
                    f"{measured.ttft_ms:.0f} ms, ITL {measured.itl_ms:.1f} ms, "
                    f"failed: {measured.errors or 0}; {measured.cpu}"
                )
                return measured

            yield status, run
        finally:
            self.cluster.delete(name)

    def sweep(self, run: Run, start: float, first: Probe | None) -> tuple[float, list[Probe], bool]:
        """The highest rate meeting MEETING %, the probes, and whether every probe met (then the
        rate is a lower bound)."""
        probes: list[Probe] = []

        def meets(rps: float) -> bool:
            measured = first if first is not None and rps == start else run(rps, self.args.probe_seconds)
            probes.append(measured)
            return measured.meets(MEETING)

        low, high = 0.0, start
        for _ in range(self.args.probes + 1):
            if not meets(high):
                break
            low, high = high, high * 1.5
        else:
            return low, probes, True
        for _ in range(self.args.probes):
            mid = (low + high) / 2
            low, high = (mid, high) if meets(mid) else (low, mid)
        return low, probes, False

    def workload(self, workload: Workload) -> None:
        tables = self.args.tables
        tandem = plan(workload.request())
        aggregated = plan(workload.request(DisaggregationMode.NEVER)).decode
        assert aggregated is not None and tandem.decode is not None
        replicas = max(1, tandem.gpus // (aggregated.tensor_parallel * aggregated.pipeline_parallel))
        same_as_a = tandem.deployment == "Aggregated" and (
            tandem.decode.tensor_parallel,
            tandem.decode.replicas,
        ) == (aggregated.tensor_parallel, replicas)
        for index, way in enumerate(ways(replicas, aggregated.tensor_parallel)):
            if index > 0 and 2 not in tables:
                return
            if index == 1 and same_as_a:
                a = self.report.goodput[-1]
                self.report.goodput.append(
                    Goodput(workload.name, way.label, a.layout, a.gpus, a.rps, 0, a.lower_bound, "", False)
                )
                continue
            with self.pool(f"{workload.name}-{'abcd'[index]}", workload, way.spec) as (status, run):
                first = None
                if index in MEASURED_AT_PLANNED_RATE:
                    first = run(workload.rps, self.args.seconds)
                    if 1 in tables:
                        self.accuracy(workload, way.label[:3], status, first)
                if 2 in tables:
                    rate, probes, lower = self.sweep(run, workload.rps, first)
                    self.report.goodput.append(
                        Goodput(
                            workload.name, way.label, layout(status), gpus(status), rate, len(probes), lower,
                            probes[-1].cpu, any(p.starved for p in probes),
                        )
                    )  # fmt: skip

    def accuracy(self, workload: Workload, way: str, status: InferencePoolStatus, measured: Probe) -> None:
        planned = status.plan
        assert planned is not None and planned.predicted_ttft_ms and planned.predicted_itl_ms
        self.report.accuracy.append(
            Accuracy(
                workload.name, f"{way} {deployment(status)}", layout(status), measured.rps,
                planned.predicted_ttft_ms, measured.ttft_ms, planned.predicted_itl_ms, measured.itl_ms,
                measured.bounded, measured.requests, measured.cpu, measured.starved,
            )
        )  # fmt: skip


def print_tables(report: Report, chart: Path) -> None:
    if report.accuracy:
        print(f"\n1. At the planned rate: measured / predicted p90 (target band {BAND[0]}-{BAND[1]})")
        print(
            f"{'workload':9} {'plan':17} {'layout':18} {'req/s':>5} {'TTFT pred':>9} {'meas':>6} "
            f"{'ratio':>5} {'ITL pred':>8} {'meas':>6} {'ratio':>5}  {'queues':10} {'reqs':>5}  "
            "CPU busy+waiting"
        )
        for row in report.accuracy:
            ttft, itl = row.ratios
            print(
                f"{row.workload:9} {row.deployment:17} {row.layout:18} {row.rps:5.1f} "
                f"{row.predicted_ttft_ms:9.0f} {row.ttft_ms:6.0f} {ttft:5.2f} "
                f"{row.predicted_itl_ms:8.1f} {row.itl_ms:6.1f} {itl:5.2f}  "
                f"{'bounded' if row.bounded else 'OVERLOADED':10} {row.requests:5}  {row.cpu}"
                f"{UNRELIABLE if row.starved else ''}{'' if row.inside else '  OUTSIDE THE BAND'}"
            )
    if report.goodput:
        print(f"\n2. Goodput per GPU ({MEETING:g} % of requests meet both targets), as ratios to (b)")
        print(
            f"{'workload':9} {'serving':34} {'layout':18} {'GPUs':>4} {'req/s':>7} {'/GPU':>6} {'vs (b)':>6}"
            f" {'probes':>6}  CPU (last probe)"
        )
        for way in report.goodput:
            (baseline,) = [
                g for g in report.goodput if g.workload == way.workload and g.way.startswith("(b)")
            ]
            rate = f"{'>=' if way.lower_bound else ''}{way.rps:.2f}"
            print(
                f"{way.workload:9} {way.way:34} {way.layout:18} {way.gpus:4} {rate:>7} {way.per_gpu:6.2f} "
                f"{way.per_gpu / baseline.per_gpu:5.2f}x {way.probes or 'as (a)':>6}  {way.cpu}"
                f"{UNRELIABLE if way.starved else ''}"
            )
    if report.steps:
        print(f"\n3. Load step, autoscaling mode Planner (chart: {chart})")
        for name, step in report.steps:
            print(f"{name:9} {step.describe()}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", default=["rag-8b"], choices=sorted(WORKLOADS), help="workloads")
    parser.add_argument("--full", action="store_true", help="all six workloads")
    parser.add_argument("--quick", action="store_true", help="table 1 only, a 30 s window")
    parser.add_argument("--tables", nargs="*", type=int, default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument("--speed", type=float, default=1.0, help="the engines' --speed (tables 1 and 2)")
    parser.add_argument("--seconds", type=float, default=120.0, help="table 1's window, in the plan's time")
    parser.add_argument("--probe-seconds", type=float, default=40.0, help="a goodput probe, plan's time")
    parser.add_argument("--probes", type=int, default=2, help="steps up, then bisection steps, per sweep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--priority", type=int, default=-10, help="CPU niceness of the pods and the client")
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="keep the devcluster's state and logs here (default: a temporary folder, removed after a run)",
    )
    parser.add_argument("--chart", type=Path, default=Path("twin-load-step.png"), help="table 3's PNG")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.tables, args.seconds = [1], 30.0
    chosen = list(CLUSTER_WORKLOADS) if args.full else [WORKLOADS[name] for name in args.only]
    report = Report(speed=args.speed)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="tandem-twin-"))
    started = time.monotonic()
    print(
        f"devcluster twin: simulator pools at --speed {args.speed:g}, figures in the plan's time ({work_dir})"
    )
    # Tables 1 and 2 measure pools once Ready: their pods may be probed as a test cluster's. Table 3
    # times new replicas coming up, so its pods keep Kubernetes' probe timing.
    probe_poll = None if 3 in args.tables else TEST_PROBE_POLL_SECONDS
    with TwinCluster.started(work_dir, probe_poll) as cluster, reniced(args.priority):
        bench = Bench(cluster, args, report)
        for workload in chosen:
            if {1, 2} & set(args.tables):
                bench.workload(workload)
            if 3 in args.tables:
                chart = (
                    args.chart
                    if len(chosen) == 1
                    else args.chart.with_stem(f"{args.chart.stem}-{workload.name}")
                )
                report.steps.append(
                    (workload.name, load_step(cluster, workload, chart, args.priority, args.seed))
                )
    if args.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)
    print_tables(report, args.chart)
    print(
        f"\n{report.outside} plan(s) outside {BAND[0]}-{BAND[1]} or overloaded; {report.unreliable} row(s) "
        f"unreliable (engines starved of CPU); {time.monotonic() - started:.0f} s"
    )
    if args.json:
        figures = {
            "speed": report.speed,
            "accuracy": [asdict(row) | {"ratios": row.ratios} for row in report.accuracy],
            "goodput": [asdict(row) for row in report.goodput],
            "steps": [{"workload": name, **asdict(step)} for name, step in report.steps],
            "outside": report.outside,
            "unreliable": report.unreliable,
        }
        args.json.write_text(json.dumps(figures, indent=1))
    return 1 if report.outside else 0


if __name__ == "__main__":
    raise SystemExit(main())
