"""Engine load and health: scrape /metrics on an interval, probe endpoints that were taken out.

An endpoint leaves rotation when a scrape or a data-path connection to it fails (`take_out`), and
comes back when its /health answers 200 again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tandem.router.endpoints import EndpointRegistry, EndpointState

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
        *,
        scrape_interval_s: float,
        probe_interval_s: float,
        timeout_s: float,
    ) -> None:
        self._registry = registry
        self._session = session
        self._scrape_interval_s = scrape_interval_s
        self._probe_interval_s = probe_interval_s
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    def take_out(self, state: EndpointState, why: str) -> None:
        if state.healthy:
            log.warning("endpoint %s (%s %s) taken out: %s", state.url, state.pool, state.role, why)
        state.healthy = False

    async def run(self) -> None:
        """Scrape and probe until cancelled."""
        async with asyncio.TaskGroup() as group:
            if self._scrape_interval_s > 0:
                group.create_task(self._every(self._scrape_interval_s, self.scrape_all))
            group.create_task(self._every(self._probe_interval_s, self.probe_all))

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
        await asyncio.gather(*(self._probe(s) for s in self._registry if not s.healthy))

    async def _scrape(self, state: EndpointState) -> None:
        try:
            async with self._session.get(f"{state.url}/metrics", timeout=self._timeout) as resp:
                if resp.status != 200:
                    raise ValueError(f"/metrics answered {resp.status}")
                load = parse_engine_load(await resp.text())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.take_out(state, f"scrape failed: {exc!r}")
            return
        state.running, state.waiting, state.kv_usage = load.running, load.waiting, load.kv_usage

    async def _probe(self, state: EndpointState) -> None:
        try:
            async with self._session.get(f"{state.url}/health", timeout=self._timeout) as resp:
                ok = resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if ok:
            log.info("endpoint %s (%s %s) back in rotation", state.url, state.pool, state.role)
            state.healthy = True
