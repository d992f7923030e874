"""Admission: at most `capacity()` requests of a pool run at once; the rest wait in a bounded queue
ordered by the pool's policy, and a full queue answers 429 with Retry-After.

Policies: `fifo` (arrival order), `priority` (lower value first, like vLLM's `priority`; ties in
arrival order), `slo` (earliest deadline first: arrival + the pool's TTFT target, or the request's
own target from a header).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tandem.api.spec import AdmissionPolicy
from tandem.router.errors import QueueFullError


@dataclass(frozen=True, slots=True)
class Ticket:
    priority: int = 0
    deadline: float = 0.0  # time.monotonic() by which the first token is due


@dataclass(order=True)
class _Waiter:
    key: tuple[float, int]
    future: asyncio.Future[None] = field(compare=False)


def queue_key(policy: AdmissionPolicy, ticket: Ticket, seq: int) -> tuple[float, int]:
    match policy:
        case AdmissionPolicy.PRIORITY:
            return (float(ticket.priority), seq)
        case AdmissionPolicy.SLO:
            return (ticket.deadline, seq)
    return (0.0, seq)


class AdmissionQueue:
    def __init__(
        self,
        pool: str,
        policy: AdmissionPolicy,
        max_queue: int,
        capacity: Callable[[], int],
        *,
        retry_after_s: int,
    ) -> None:
        self.pool = pool
        self.policy = policy
        self.max_queue = max_queue
        self._capacity = capacity
        self._retry_after_s = retry_after_s
        self._active = 0
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def depth(self) -> int:
        return len(self._waiters)

    @property
    def active(self) -> int:
        return self._active

    @asynccontextmanager
    async def slot(self, ticket: Ticket) -> AsyncIterator[None]:
        await self.acquire(ticket)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, ticket: Ticket) -> None:
        """Return once the request may run; raise QueueFullError when it may not even wait."""
        if not self._waiters and self._active < self._capacity():
            self._active += 1
            return
        if len(self._waiters) >= self.max_queue:
            raise QueueFullError(self.pool, self._retry_after_s)
        waiter = _Waiter(
            queue_key(self.policy, ticket, next(self._seq)), asyncio.get_running_loop().create_future()
        )
        heapq.heappush(self._waiters, waiter)
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release()  # granted just as the client went away: pass the slot on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
                heapq.heapify(self._waiters)
            raise

    def release(self) -> None:
        self._active -= 1
        self.wake()

    def wake(self) -> None:
        """Admit waiters while there is room (after a release, or when capacity grew)."""
        while self._waiters and self._active < self._capacity():
            waiter = heapq.heappop(self._waiters)
            if waiter.future.cancelled():
                continue
            waiter.future.set_result(None)
            self._active += 1
