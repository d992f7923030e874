"""A coalescing work queue (client-go's shape): many triggers for a key make one reconcile.

A key is never processed by two workers at once; a key added while it is processed runs once more
afterwards; a failed key is retried after an exponential backoff, and a success resets it.
Retries wait on a ``Clock``: the running event loop's, unless one is given (tests pass a fake).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, Protocol, TypeVar

K = TypeVar("K", bound=Hashable)

logger = logging.getLogger(__name__)


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the queue needs of time: the time, and a callback after ``delay`` seconds (``asyncio``
    loops fit)."""

    def time(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer: ...


class WorkQueue(Generic[K]):
    def __init__(
        self,
        process: Callable[[K], Awaitable[None]],
        *,
        workers: int,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        clock: Clock | None = None,
    ) -> None:
        self._process = process
        self._clock = clock
        self._workers = workers
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, tuple[float, Timer]] = {}  # key -> (when it fires, its timer)
        self._tasks: list[asyncio.Task[None]] = []

    def __len__(self) -> int:
        return len(self._queued)

    def add(self, key: K) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` once ``delay`` seconds have passed; of two pending timers for a key, the one
        that fires first stays (a retry in 1 s is not lost to a resync due in 15)."""
        clock = self._clock or asyncio.get_running_loop()
        due = clock.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= due:
                return
            pending[1].cancel()
        self._timers[key] = (due, clock.call_later(delay, lambda: self._fire(key)))

    def forget(self, key: K) -> None:
        """Drop retry state and a pending timer for a key whose object is gone."""
        self._failures.pop(key, None)
        pending = self._timers.pop(key, None)
        if pending is not None:
            pending[1].cancel()

    def failures(self, key: K) -> int:
        """How many runs of ``key`` in a row have failed (0 after a success)."""
        return self._failures.get(key, 0)

    def retry_delay(self, key: K) -> float:
        """How long a failure of ``key``'s current run waits for its retry: doubling, capped."""
        return min(self._max_delay, self._base_delay * 2.0 ** self.failures(key))

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def join(self) -> None:
        """Wait until every queued key is processed (retries waiting on a timer excepted)."""
        await self._queue.join()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"reconcile-worker-{i}") for i in range(self._workers)
        ]

    async def stop(self) -> None:
        for _, timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            failed = False
            try:
                await self._process(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                failed = True
                delay = self.retry_delay(key)
                self._failures[key] = failures = self.failures(key) + 1
                logger.exception("reconciling %s failed (attempt %d); retrying in %g s", key, failures, delay)
                self.add_after(key, delay)
            else:
                self._failures.pop(key, None)
            finally:
                self._active.discard(key)
                # After a failure the backoff timer brings the key back; triggers meanwhile wait for it.
                if key in self._dirty:
                    self._dirty.discard(key)
                    if not failed:
                        self.add(key)
                self._queue.task_done()
