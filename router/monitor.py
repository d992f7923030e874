"""Engine load and health: scrape /metrics on an interval, apply outlier detection, probe
endpoints that were ejected.

The data path reports each request's outcome on an endpoint (`failed`, `succeeded`); the rules
of ejection and return are router/outlier.py's, applied here with the monitor's clock. An ejected
endpoint is probed (/health) once its time is up, and a healthy one gets one trial request
(`hold_trial`) before it is back in rotation.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tandem.router import outlier
from tandem.router.endpoints import EndpointRegistry, EndpointState
from tandem.router.errors import BackendError, BackendUnreachableError
from tandem.router.metrics import RouterMetrics
from tandem.router.outlier import CLEAN, EjectionPolicy, Phase

log = logging.getLogger(__name__)

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"


@dataclass(frozen=True, slots=True)
class EngineLoad:
    running: float = 0.0
    waiting: float = 0.0
    kv_usage: float = 0.0


def parse_engine_load(text: str) -> EngineLoad:
    """The gauges the router balances on, summed over label sets (an engine may report per engine
    index). A missing gauge reads as 0; a malformed exposition raises ValueError."""
    totals = {RUNNING: 0.0, WAITING: 0.0, KV_USAGE: 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals and math.isfinite(sample.value):
                totals[sample.name] += sample.value
    return EngineLoad(totals[RUNNING], totals[WAITING], totals[KV_USAGE])


class EndpointMonitor:
    def __init__(
        self,
        registry: EndpointRegistry,
        session: aiohttp.ClientSession,
        metrics: RouterMetrics,
        *,
        scrape_interval_s: float,
        ejection: EjectionPolicy,
        timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._session = session
        self._metrics = metrics
        self._scrape_interval_s = scrape_interval_s
        self._ejection = ejection
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._clock = clock

    def failed(self, state: EndpointState, error: BackendError) -> None:
        """`error` (one that names how it failed) happened on the endpoint."""
        failure = error.failure
        if failure is None:
            return
        self._metrics.endpoint_failures.labels(state.pool, state.role.value, failure.value).inc()
        before = state.outlier
        others = [s for s in self._registry.states(state.pool, state.role) if s is not state]
        may = outlier.may_eject(sum(s.outlier.phase is not Phase.IN for s in others), len(others) + 1)
        state.record(outlier.failed(before, failure, self._ejection, self._clock(), may=may))
        if state.outlier.phase is Phase.EJECTED and before.phase is not Phase.EJECTED:
            self._metrics.ejections.labels(state.pool, state.role.value, failure.value).inc()
            log.warning(
                "endpoint %s (%s %s) ejected for %g s: %s",
                state.url,
                state.pool,
                state.role,
                self._ejection.ejection_s(state.outlier.ejections),
                error.message,
            )

    def succeeded(self, state: EndpointState) -> None:
        """A request completed on the endpoint (on the data path: the common case costs one test)."""
        if state.outlier is not CLEAN:
            if state.outlier.phase is Phase.TRIAL:
                log.info("endpoint %s (%s %s) back in rotation", state.url, state.pool, state.role)
            state.record(outlier.succeeded(state.outlier))

    def hold_trial(self, state: EndpointState) -> Callable[[], None]:
        """Send a request to an endpoint on trial: nobody else goes there until its outcome is in or
        the returned release is called."""
        state.record(outlier.take_trial(state.outlier))

        def release() -> None:
            state.record(outlier.release_trial(state.outlier))

        return release

    async def run(self) -> None:
        """Scrape and probe until cancelled. Probes look for due endpoints every `base_s`."""
        async with asyncio.TaskGroup() as group:
            if self._scrape_interval_s > 0:
                group.create_task(self._every(self._scrape_interval_s, self.scrape_all))
            group.create_task(self._every(self._ejection.base_s, self.probe_all))

    async def _every(self, interval_s: float, step: Callable[[], Awaitable[None]]) -> None:
        while True:
            try:
                await step()
            except Exception:  # a bug in one round must not end scraping and probing for good
                log.exception("endpoint monitor round failed")
            await asyncio.sleep(interval_s)

    async def scrape_all(self) -> None:
        await asyncio.gather(*(self._scrape(s) for s in self._registry if s.healthy))

    async def probe_all(self) -> None:
        now = self._clock()
        await asyncio.gather(*(self._probe(s) for s in self._registry if outlier.due(s.outlier, now)))

    async def _scrape(self, state: EndpointState) -> None:
        try:
            async with self._session.get(f"{state.url}/metrics", timeout=self._timeout) as resp:
                if resp.status != 200:
                    raise ValueError(f"/metrics answered {resp.status}")
                load = parse_engine_load(await resp.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.failed(state, BackendUnreachableError(state.url, f"scrape failed: {exc!r}"))
            return
        state.running, state.waiting, state.kv_usage = load.running, load.waiting, load.kv_usage

    async def _probe(self, state: EndpointState) -> None:
        try:
            async with self._session.get(f"{state.url}/health", timeout=self._timeout) as resp:
                ok = resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        state.record(outlier.probed(state.outlier, ok, self._ejection, self._clock()))
        if state.outlier.phase is Phase.TRIAL:
            log.info("endpoint %s (%s %s) healthy: one trial request", state.url, state.pool, state.role)
