"""A pool's admission queue: at most `capacity()` requests run at once; the rest wait in a bounded
queue ordered by the pool's policy (`Admission.key`), and a newcomer the policy sheds
(`Admission.full`) is answered 429 with Retry-After."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from tandem.router.admission.base import Admission, Clock, Ticket
from tandem.router.errors import QueueFullError


@dataclass(order=True)
class _Waiter:
    key: tuple[float, int]
    ticket: Ticket = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)


class AdmissionQueue:
    def __init__(
        self,
        pool: str,
        policy: Admission,
        max_queue: int,
        capacity: Callable[[], int],
        *,
        retry_after_s: int,
        clock: Clock,
    ) -> None:
        self.pool = pool
        self.policy = policy  # requests already waiting keep their places when it changes
        self.max_queue = max_queue
        self._capacity = capacity
        self._retry_after_s = retry_after_s
        self._clock = clock
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
        policy = self.policy
        if not self._waiters and self._active < self._capacity():
            self._active += 1
            if policy.observes and policy.admitted(ticket, ticket.arrival):  # it did not wait
                self._rekey()
            return
        if policy.full(len(self._waiters), self.max_queue):
            raise QueueFullError(self.pool, self._retry_after_s)
        waiter = _Waiter(
            (policy.key(ticket), next(self._seq)), ticket, asyncio.get_running_loop().create_future()
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
        policy = self.policy
        while self._waiters and self._active < self._capacity():
            waiter = heapq.heappop(self._waiters)
            if waiter.future.cancelled():
                continue
            waiter.future.set_result(None)
            self._active += 1
            if policy.observes and policy.admitted(waiter.ticket, self._clock()):
                self._rekey()

    def _rekey(self) -> None:
        """The policy's order changed: every waiter takes its key again (arrival order kept in ties)."""
        for waiter in self._waiters:
            waiter.key = (self.policy.key(waiter.ticket), waiter.key[1])
        heapq.heapify(self._waiters)
