"""One load probe against a pool's router on the devcluster, in the plan's time.

The engines run ``--speed S`` times faster than their timing model, so the probe sends ``S`` times
the modelled rate for ``1/S`` of the modelled window (``tandem load``'s Python API: Poisson
arrivals, log-normal prompts, fixed outputs, ``ignore_eos``), judges the SLO against targets ``S``
times tighter, and multiplies the latencies it measured by ``S``: every figure it returns is in the
plan's time. What does not scale with the clock (HTTP, the router, the client) is then counted
``S`` times: keep ``S`` small.

Requests due in the first ``WARMUP_FRACTION`` of the window are left out (the engines start
empty), as the in-process twin leaves them out. The run is *bounded* (the twin's criterion, seen
from the client) when no request failed and, at the end of the arrival window, fewer requests were
waiting for their first token than arrive in one TTFT target.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from cpu_share import Meter, Share, describe

from tandem.api import SloSpec, TokenStats
from tandem.load.lengths import Fixed, from_token_stats
from tandem.load.records import RequestRecord
from tandem.load.replicas import PoolReader, ReplicaSample
from tandem.load.run import LoadSettings, RunResult, Traffic, execute
from tandem.load.schedule import RateSchedule
from tandem.load.stats import summarize
from tandem.sim.twin import WARMUP_FRACTION, Workload

REQUEST_TIMEOUT_S = 120.0  # wall clock


@dataclass(frozen=True)
class Probe:
    """A load run, its figures in the plan's time (ms, requests/s)."""

    rps: float
    requests: int  # judged: due after the warm-up
    errors: dict[str, int]  # judged requests that failed, by kind (``tandem load``'s)
    ttft_ms: float  # at the SLO's percentile
    itl_ms: float
    attainment: float  # share of judged requests that met both targets
    bounded: bool
    shares: tuple[Share, ...]  # the pods' processes over the run
    client_cpu: float  # the load generator's CPU, share of one core
    records: tuple[RequestRecord, ...]  # wall-clock times, as measured
    replicas: tuple[ReplicaSample, ...]

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def starved(self) -> bool:
        return any(share.starved for share in self.shares) or self.client_cpu > 0.8

    @property
    def cpu(self) -> str:
        """The pods' processes and the client: busy and waiting shares."""
        return f"{describe(self.shares)}, client {self.client_cpu:.0%}"

    def meets(self, percentile: float) -> bool:
        return self.attainment * 100 >= percentile


def scaled_slo(workload: Workload, speed: float) -> SloSpec:
    """The targets on the compressed clock."""
    return SloSpec(ttft_ms=workload.ttft_ms / speed, itl_ms=workload.itl_ms / speed)


def traffic(workload: Workload, schedule: RateSchedule) -> Traffic:
    prompts = from_token_stats(TokenStats(mean=workload.prompt_tokens, p90=workload.prompt_p90))
    return Traffic(schedule=schedule, prompts=prompts, outputs=Fixed(workload.output_tokens))


def waiting_at(records: Sequence[RequestRecord], t_s: float) -> int:
    """Requests sent by ``t_s`` whose first token had not come by then."""
    return sum(
        1
        for r in records
        if r.sent_s is not None and r.sent_s <= t_s and (r.ttft_s is None or r.sent_s + r.ttft_s > t_s)
    )


Processes = Callable[[], Sequence[tuple[str, str, int]]]  # (pod, role, pid) of the pool's pods now


def probe(
    url: str,
    workload: Workload,
    rps: float,
    seconds: float,
    speed: float,
    processes: Processes,
    *,
    seed: int = 0,
    schedule: RateSchedule | None = None,
    pool: Callable[[], Awaitable[PoolReader]] | None = None,
) -> Probe:
    """``seconds`` of the plan's time at ``rps`` through ``url``; or ``schedule`` (wall time) with
    ``speed`` 1, sampling the replicas of the pool that ``pool`` connects to."""
    wall_s = seconds / speed
    schedule = schedule or RateSchedule.constant(rps * speed, wall_s)
    settings = LoadSettings(
        url=url,
        traffic=traffic(workload, schedule),
        duration_s=schedule.duration_s,
        seed=seed,
        timeout_s=REQUEST_TIMEOUT_S,
        max_concurrency=2048,
    )

    async def run() -> RunResult:
        reader = await pool() if pool is not None else None
        try:
            return await execute(settings, pool=reader)
        finally:
            if reader is not None:
                await reader.close()

    started = time.monotonic()
    meter = Meter(processes(), started)
    result = asyncio.run(run())
    finished = time.monotonic()
    shares = tuple(meter.shares(processes(), finished))
    slo = scaled_slo(workload, speed)
    judged = [r for r in result.records if r.scheduled_s >= WARMUP_FRACTION * schedule.duration_s]
    summary = summarize(judged, slo)
    end = schedule.duration_s
    return Probe(
        rps=rps,
        requests=summary.requests,
        errors=summary.errors,
        ttft_ms=(summary.slo.ttft_at_percentile_ms or float("nan")) * speed,
        itl_ms=(summary.slo.itl_at_percentile_ms or float("nan")) * speed,
        attainment=summary.slo.attainment,
        bounded=summary.failed == 0 and waiting_at(result.records, end) < rps * speed * slo.ttft_ms / 1000,
        shares=shares,
        client_cpu=result.client_cpu_s / (finished - started),
        records=tuple(result.records),
        replicas=tuple(result.replicas),
    )
