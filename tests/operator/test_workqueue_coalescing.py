"""The reconcile queue: triggers coalesce, a key never runs twice at once, failures back off.

Nothing here waits on the wall clock: ordering comes from events and ``join``, retry delays from a
fake clock the test advances.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from tandem.operator.workqueue import WorkQueue

# How long a test waits for something that should happen at once before it fails (not a delay).
DEADLINE_S = 10.0


@dataclass
class FakeTimer:
    due: float
    callback: Callable[[], None]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A ``Clock`` whose time moves only by ``advance``; it records the delays it was asked for."""

    def __init__(self) -> None:
        self.now = 0.0
        self.delays: list[float] = []
        self._timers: list[FakeTimer] = []

    def time(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> FakeTimer:
        self.delays.append(delay)
        timer = FakeTimer(self.now + delay, callback)
        self._timers.append(timer)
        return timer

    @property
    def pending(self) -> int:
        return sum(not timer.cancelled for timer in self._timers)

    def advance(self, seconds: float) -> None:
        """Move time on, firing the timers that fall due."""
        self.now += seconds
        due = [timer for timer in self._timers if not timer.cancelled and timer.due <= self.now]
        self._timers = [timer for timer in self._timers if timer not in due]
        for timer in due:
            timer.callback()


@contextlib.asynccontextmanager
async def running(queue: WorkQueue[str]) -> AsyncIterator[WorkQueue[str]]:
    queue.start()
    try:
        yield queue
    finally:
        await queue.stop()


async def settled(queue: WorkQueue[str]) -> None:
    """The queue idle, or the test failed after DEADLINE_S (not hung)."""
    await asyncio.wait_for(queue.join(), DEADLINE_S)


async def test_many_triggers_during_a_reconcile_make_one_more() -> None:
    runs: list[str] = []
    started = asyncio.Event()
    release = asyncio.Event()

    async def process(key: str) -> None:
        runs.append(key)
        started.set()
        if len(runs) == 1:
            await release.wait()

    async with running(WorkQueue(process, workers=4)) as queue:
        queue.add("pool")
        await asyncio.wait_for(started.wait(), DEADLINE_S)
        for _ in range(50):
            queue.add("pool")
        assert len(queue) == 0  # nothing queued for the idle workers: the key is running
        release.set()
        await settled(queue)
        assert runs == ["pool", "pool"]


async def test_different_keys_run_concurrently() -> None:
    active: set[str] = set()
    all_active = asyncio.Event()

    async def process(key: str) -> None:
        active.add(key)
        if len(active) == 3:
            all_active.set()
        # Each reconcile waits for the other two: one worker at a time would never get there.
        await asyncio.wait_for(all_active.wait(), DEADLINE_S)

    async with running(WorkQueue(process, workers=3)) as queue:
        for key in "abc":
            queue.add(key)
        await asyncio.wait_for(queue.join(), 2 * DEADLINE_S)
        assert active == {"a", "b", "c"} and all_active.is_set()


async def test_failures_retry_with_growing_delays_until_success() -> None:
    """The flaky version asserted wall-clock gaps of 20-50 ms between attempts."""
    attempts = 0
    clock = FakeClock()

    async def process(key: str) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 4:
            raise RuntimeError("API down")

    async with running(WorkQueue(process, workers=1, base_delay=1.0, max_delay=3.0, clock=clock)) as queue:
        queue.add("pool")
        await settled(queue)
        for expected in (1.0, 2.0, 3.0):  # doubling, then capped at max_delay
            assert clock.delays[-1] == expected
            clock.advance(expected - 0.001)
            await settled(queue)
            attempts_before = attempts
            clock.advance(0.001)
            await settled(queue)
            assert attempts == attempts_before + 1  # retried when the delay was over, not before
        assert attempts == 4 and clock.delays == [1.0, 2.0, 3.0]
        assert clock.pending == 0  # the success left no retry behind


async def test_a_success_resets_the_backoff() -> None:
    outcomes = iter([False, True, False])  # fail, succeed, fail again
    clock = FakeClock()

    async def process(key: str) -> None:
        if not next(outcomes):
            raise RuntimeError("API down")

    async with running(WorkQueue(process, workers=1, base_delay=1.0, clock=clock)) as queue:
        queue.add("pool")
        await settled(queue)
        clock.advance(1.0)
        await settled(queue)
        queue.add("pool")
        await settled(queue)
        assert clock.delays == [1.0, 1.0]


async def test_forgotten_key_is_not_retried() -> None:
    calls = 0
    clock = FakeClock()

    async def process(key: str) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("gone")

    async with running(WorkQueue(process, workers=1, base_delay=1.0, clock=clock)) as queue:
        queue.add("pool")
        await settled(queue)
        assert clock.pending == 1
        queue.forget("pool")
        assert clock.pending == 0
        clock.advance(60.0)
        await settled(queue)
        assert calls == 1


async def test_the_retry_delay_is_known_before_each_retry_and_capped() -> None:
    delays: list[float] = []
    succeeded = asyncio.Event()
    queue: WorkQueue[str]

    async def process(key: str) -> None:
        delays.append(queue.retry_delay(key))  # what a failure now waits: the controller reports it
        if len(delays) < 6:
            raise RuntimeError("API down")
        succeeded.set()

    queue = WorkQueue(process, workers=1, base_delay=0.001, max_delay=0.004)
    async with running(queue):
        queue.add("pool")
        await asyncio.wait_for(succeeded.wait(), 10)
        assert delays == [0.001, 0.002, 0.004, 0.004, 0.004, 0.004]
        assert queue.failures("pool") == 0  # the sixth run succeeded


async def test_of_two_pending_timers_for_a_key_the_sooner_one_fires() -> None:
    """A pool that asked to be looked at again in 15 s (its autoscaler's interval) and then failed
    retries after its backoff, not at the 15 s timer: before, the first timer set won."""
    clock = FakeClock()
    runs: list[float] = []

    async def process(key: str) -> None:
        runs.append(clock.now)

    async with running(WorkQueue(process, workers=1, clock=clock)) as queue:
        queue.add_after("a", 15.0)
        queue.add_after("a", 1.0)
        queue.add_after("a", 5.0)  # later than the pending one: it stays
        assert clock.pending == 1
        clock.advance(1.0)
        await queue.join()
        assert runs == [1.0]
        clock.advance(20.0)
        await queue.join()
        assert runs == [1.0]  # the 15 s timer was replaced, not kept beside
