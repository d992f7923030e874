"""A DP replica's engines behind one API server, as vLLM's internal DP load balancing runs them.

``--data-parallel-size N`` gives the simulator N engines (DP ranks), each its own scheduler, batch,
KV cache and step loop, timed by the same ``EngineTiming`` (the plan's is one rank's, MoE expert
reads and all-to-all included: tandem.planner.timing). A request goes to the rank with the lowest
score, as vLLM 0.33's ``DPLBAsyncMPClient.get_core_engine_for_request`` picks
(v1/engine/core_client.py:1768-1803): waiting + running, plus ``6 x waiting x max(0, kv_usage -
0.5)``, the scan starting one rank later at each request so ties rotate. The simulator's counts
are exact: vLLM's are its coordinator's snapshot of each engine's scheduler (num_waiting_reqs,
num_running_reqs, kv_cache_usage: v1/engine/coordinator.py:404-406, published every 100 ms),
floored by the client's own in-flight count (core_client.py:1786), which a request routed but not
yet scheduled is part of, as it is of the simulator's waiting queue. :class:`LoadBalancer` is that
choice, for the HTTP simulator's ranks here and the twin's (tandem.sim.twin).

Where it differs from vLLM: the ranks step independently (vLLM steps the ranks of an MoE model
together, idle ones with dummy batches; the plan's timing assumes every rank alike), and one KV
connector serves the process (vLLM's NIXL side channel is per rank, at port + DP rank).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from tandem.sim.connector import EngineRequest
from tandem.sim.engine import Engine, RequestStream
from tandem.sim.scheduler import Scheduler

KV_PRESSURE_WEIGHT = 6.0  # core_client.py:1794
KV_PRESSURE_FROM = 0.5


def score(scheduler: Scheduler) -> float:
    """vLLM's load score of one DP rank (lower takes the request)."""
    waiting, running = len(scheduler.waiting), len(scheduler.running)
    pressure = KV_PRESSURE_WEIGHT * max(0.0, scheduler.kv_usage - KV_PRESSURE_FROM)
    return waiting + running + waiting * pressure


class LoadBalancer:
    """vLLM's choice of DP rank for each new request: the lowest score, the first of equal ones in
    a scan that starts one rank later at each request (core_client.py:1771-1806)."""

    def __init__(self) -> None:
        self._start = 0  # vLLM's eng_start_index: 0 for the API server's one client

    def pick(self, ranks: Sequence[Scheduler]) -> int:
        """The index of the rank in `ranks` (their schedulers, in rank order) that takes it."""
        count = len(ranks)
        order = [(self._start + i) % count for i in range(count)]
        self._start = (self._start + 1) % count
        return min(order, key=lambda rank: score(ranks[rank]))


class DataParallelEngines:
    """The ranks; what the app asks of an engine (and the connector's HeldBlocks)."""

    def __init__(self, ranks: Sequence[Engine]) -> None:
        if not ranks:
            raise ValueError("a DP replica needs at least one rank")
        self.ranks = tuple(ranks)
        self._balancer = LoadBalancer()

    def pick(self) -> Engine:
        return self.ranks[self._balancer.pick([rank.scheduler for rank in self.ranks])]

    async def generate(self, request: EngineRequest) -> RequestStream:
        return await self.pick().generate(request)

    def abort(self, request_id: str) -> None:
        for rank in self.ranks:  # a rank that does not hold it does nothing
            rank.abort(request_id)

    def release(self, request_id: str) -> bool:
        return any(rank.release(request_id) for rank in self.ranks)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for rank in self.ranks:
                group.create_task(rank.run())

    async def close(self) -> None:
        for rank in self.ranks:
            await rank.close()
