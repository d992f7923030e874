"""Table 3: a load step on a pool in ``mode: Planner``, and how the autoscaler answers it.

The pool is Tandem's plan for the workload with ``spec.autoscaling.mode: Planner`` and windows
shortened so that a run takes minutes (``AUTOSCALING``). The load is the planned rate for
``BEFORE_S``, ``STEP_FACTOR`` times it for ``STEP_S``, then the planned rate for ``AFTER_S``, on
engines at ``--speed 1``: the autoscaler reads the routers' rates per wall-clock second and plans for
them with the pool's timing, so a compressed clock would make it size for a load ``speed`` times
larger than the engines see.

From the run (``tandem load``'s records and its replica samples of the pool's Deployments):

- *recovered*: from the step's start to the first window (``WINDOW_S``) from which every window until
  the step ends has at least 90 % of its requests meeting both targets (0: attainment never fell
  below);
- *peak replicas*: the most desired (``spec.replicas``) and ready replicas per role;
- *scale-down*: from the step's end until every role's desired replicas settled at their count at the
  end of the run, and that count (which may stay above the count before the step where the
  autoscaler learned that the plan is optimistic: docs/autoscaling.md, "corrections").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from cluster_load import probe, scaled_slo
from cluster_pools import NAMESPACE, TwinCluster, pool_manifest

from tandem.load.chart import draw_chart
from tandem.load.kube import KubernetesPool
from tandem.load.replicas import ReplicaSample
from tandem.load.schedule import RateSchedule
from tandem.load.stats import Window, windows
from tandem.sim.twin import Workload

STEP_FACTOR = 3
BEFORE_S, STEP_S, AFTER_S = 30.0, 120.0, 90.0
WINDOW_S = 5.0
MEETING = 0.9
AUTOSCALING = {
    "mode": "Planner",
    "interval": "2s",
    "window": "10s",
    "scaleUpStabilization": "6s",
    "scaleDownStabilization": "30s",
    "minReplicas": {"prefill": 0, "decode": 1},
    "maxReplicas": {"prefill": 8, "decode": 8},
}


@dataclass(frozen=True)
class StepResult:
    rps: float
    recovered_s: float | None  # None: attainment was still below 90 % when the step ended
    before: dict[str, int]  # desired replicas per engine role when the step began
    peak_desired: dict[str, int]
    peak_ready: dict[str, int]
    scaled_down_s: float | None  # from the step's end until the replicas settled; None: no scale-down
    after: dict[str, int]  # desired replicas at the end of the run
    attainment: float  # over the whole run
    starved: bool
    cpu: str
    chart: str

    def describe(self) -> str:
        recovered = "never within the step" if self.recovered_s is None else f"{self.recovered_s:.0f} s"
        if self.scaled_down_s is None:
            down = "no scale-down within the run"
        else:
            down = f"scaled down to {self.after} {self.scaled_down_s:.0f} s after the step"
        return (
            f"{self.rps:g} -> {STEP_FACTOR * self.rps:g} req/s for {STEP_S:.0f} s: attainment >= 90 % again "
            f"after {recovered}; desired replicas {self.before}, peak {self.peak_desired} (ready "
            f"{self.peak_ready}); {down}; attainment {self.attainment:.0%} over the run; CPU {self.cpu}"
            f"{'  UNRELIABLE (starved)' if self.starved else ''}"
        )


def recovered_after(series: list[Window], start_s: float, end_s: float) -> float | None:
    """Seconds from ``start_s`` to the first window from which every window until ``end_s`` has
    attainment at least MEETING (0: none fell below it); None when the last one is below."""
    held_from = None
    for window in (w for w in series if w.start_s >= start_s and w.start_s + w.width_s <= end_s):
        if window.attainment is not None and window.attainment < MEETING:
            held_from = None
        elif held_from is None:
            held_from = window
    return None if held_from is None else held_from.start_s - start_s


def settled_after(samples: list[ReplicaSample], roles: list[str], t_s: float) -> float:
    """Seconds from ``t_s`` to the first sample from which every role's desired replicas stayed at
    their last count (0: none differed from it after ``t_s``)."""
    final = desired_at(samples, math.inf)
    changes = [s.t_s for s in samples if s.t_s >= t_s and s.role in roles and s.desired != final[s.role]]
    if not changes:
        return 0.0
    return float(min(s.t_s for s in samples if s.t_s > max(changes))) - t_s


def desired_at(samples: list[ReplicaSample], t_s: float) -> dict[str, int]:
    """Each engine role's desired replicas at the last sample at or before ``t_s``."""
    latest: dict[str, ReplicaSample] = {}
    for sample in sorted(samples, key=lambda s: s.t_s):
        if sample.t_s <= t_s and sample.role != "router":
            latest[sample.role] = sample
    return {role: s.desired for role, s in sorted(latest.items())}


def load_step(cluster: TwinCluster, workload: Workload, chart: Path, priority: int, seed: int) -> StepResult:
    name = f"{workload.name}-step"
    manifest = pool_manifest(name, workload, speed=1.0, spec={"autoscaling": AUTOSCALING})
    cluster.apply(manifest, say=lambda _: None)
    try:
        cluster.prioritize(name, priority)
        rate = workload.rps
        schedule = RateSchedule.parse(
            f"{rate:g}:{BEFORE_S:g}s,{STEP_FACTOR * rate:g}:{STEP_S:g}s,{rate:g}:{AFTER_S:g}s"
        )

        def processes() -> list[tuple[str, str, int]]:
            return [(p.pod, p.role, p.pid) for p in cluster.prioritize(name, priority)]

        async def reader() -> KubernetesPool:
            return await KubernetesPool.connect(name, NAMESPACE, cluster.cluster.kubeconfig)

        measured = probe(
            cluster.router_url(name), workload, rate, schedule.duration_s, 1.0, processes,
            seed=seed, schedule=schedule, pool=reader,
        )  # fmt: skip
    finally:
        cluster.delete(name)
    slo = scaled_slo(workload, 1.0)
    series = windows(list(measured.records), WINDOW_S, slo)
    samples = list(measured.replicas)
    step_end = BEFORE_S + STEP_S
    before = {r: n for r, n in desired_at(samples, BEFORE_S).items() if n > 0}
    engines = [s for s in samples if s.role != "router"]
    roles = sorted({s.role for s in engines if s.desired > 0})
    peak_desired = {r: max(s.desired for s in engines if s.role == r) for r in roles}
    after = {r: n for r, n in desired_at(samples, schedule.duration_s + 1e9).items() if r in roles}
    draw_chart(
        chart, series, slo, f"{workload.name}: x{STEP_FACTOR} load step, autoscaling mode Planner",
        schedule, samples,
    )  # fmt: skip
    return StepResult(
        rps=rate,
        recovered_s=recovered_after(series, BEFORE_S, step_end),
        before=before,
        peak_desired=peak_desired,
        peak_ready={r: max(s.ready for s in engines if s.role == r) for r in roles},
        scaled_down_s=settled_after(engines, roles, step_end) if after != peak_desired else None,
        after=after,
        attainment=measured.attainment,
        starved=measured.starved,
        cpu=measured.cpu,
        chart=str(chart),
    )
