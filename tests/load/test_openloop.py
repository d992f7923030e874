"""Open-loop dispatch on a virtual clock: arrivals go out when due, whatever earlier requests do."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import pytest
from load_clock import VirtualClock

from tandem.load.client import Measured
from tandem.load.openloop import Progress, run_open_loop
from tandem.load.records import ErrorKind, RequestRecord
from tandem.load.workload import Arrival


def arrivals(count: int, gap_s: float = 1.0) -> list[Arrival]:
    return [Arrival(i, i * gap_s, 10 + i, 5) for i in range(count)]


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (a bounded number of turns, no wall clock)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class Server:
    """Answers each request when the test opens the gate; the answer takes 0.5 s of virtual time."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.gate = asyncio.Event()
        self.seen: list[Arrival] = []

    async def send(self, arrival: Arrival) -> Measured:
        sent = self.clock.now()
        self.seen.append(arrival)
        await self.gate.wait()
        return Measured(sent_s=sent, ended_s=sent + 0.5, ttft_s=0.1, latency_s=0.5, itl_s=[0.1] * 4)


def counts_add_up(records: list[RequestRecord], progress: Progress) -> None:
    completed = sum(r.ok for r in records)
    failed = sum(not r.ok for r in records)
    assert progress.due == len(records) == completed + failed
    assert (progress.completed, progress.failed, progress.in_flight, progress.waiting) == (
        completed,
        failed,
        0,
        0,
    )


async def test_arrivals_go_out_when_due_not_when_earlier_ones_finish() -> None:
    clock, progress = VirtualClock(), Progress()
    server = Server(clock)
    run = asyncio.create_task(
        run_open_loop(arrivals(5), lambda a: a, server.send, clock, max_concurrency=100, progress=progress)
    )
    await until(lambda: len(server.seen) == 5)  # none has finished, and all five were sent
    assert progress.in_flight == 5
    server.gate.set()
    records = await run
    assert [r.sent_s for r in records] == [r.scheduled_s for r in records] == [0, 1, 2, 3, 4]
    assert not any(r.held for r in records)
    assert [(r.prompt_tokens, r.ttft_s) for r in records] == [(10 + i, 0.1) for i in range(5)]
    counts_add_up(records, progress)


async def test_arrivals_beyond_the_in_flight_bound_are_held_and_counted() -> None:
    clock, progress = VirtualClock(), Progress()
    server = Server(clock)
    run = asyncio.create_task(
        run_open_loop(arrivals(5), lambda a: a, server.send, clock, max_concurrency=2, progress=progress)
    )
    await until(lambda: progress.due == 5 and progress.waiting == 3)
    assert (len(server.seen), progress.in_flight, progress.waiting, progress.held) == (2, 2, 3, 3)
    server.gate.set()
    records = await run
    assert [r.held for r in records] == [False, False, True, True, True]
    held_sent = [r.sent_s for r in records if r.held]
    assert all(s is not None and s >= 4.0 for s in held_sent)  # they went out once a slot freed, late
    assert [r.index for r in records] == [0, 1, 2, 3, 4]
    counts_add_up(records, progress)


async def test_stopping_cancels_what_has_not_finished_and_records_it() -> None:
    clock, progress, stop = VirtualClock(), Progress(), asyncio.Event()
    server = Server(clock)  # the gate never opens
    run = asyncio.create_task(
        run_open_loop(
            arrivals(4), lambda a: a, server.send, clock, max_concurrency=3, stop=stop, progress=progress
        )
    )
    await until(lambda: progress.due == 4)
    stop.set()
    records = await run
    assert [r.error for r in records] == [ErrorKind.CANCELLED] * 4
    assert [r.sent_s for r in records] == [0.0, 1.0, 2.0, None]  # the held one never went out
    counts_add_up(records, progress)


async def test_stopping_ends_arrivals_early() -> None:
    clock, stop = VirtualClock(), asyncio.Event()

    def endless() -> Iterator[Arrival]:
        index = 0
        while True:
            yield Arrival(index, float(index), 1, 1)
            if index == 3:
                stop.set()
            index += 1

    async def send(arrival: Arrival) -> Measured:
        return Measured(
            sent_s=clock.now(), ended_s=clock.now(), ttft_s=0.0, latency_s=0.0, finish_reason="stop"
        )

    records = await run_open_loop(endless(), lambda a: a, send, clock, max_concurrency=1, stop=stop)
    assert [r.index for r in records] == [0, 1, 2, 3]


async def test_prepare_runs_before_the_wait_for_the_arrival() -> None:
    clock = VirtualClock()
    prepared_at: list[float] = []

    def prepare(arrival: Arrival) -> Arrival:
        prepared_at.append(clock.now())
        return arrival

    async def send(arrival: Arrival) -> Measured:
        return Measured(
            sent_s=clock.now(), ended_s=clock.now(), ttft_s=0.0, latency_s=0.0, finish_reason="stop"
        )

    await run_open_loop(arrivals(3, gap_s=2.0), prepare, send, clock, max_concurrency=1)
    assert prepared_at == [0.0, 0.0, 2.0]  # arrival k is prepared while arrival k-1 is due


async def test_a_bug_in_send_is_raised_not_recorded() -> None:
    async def send(arrival: Arrival) -> Measured:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await run_open_loop(arrivals(2), lambda a: a, send, VirtualClock(), max_concurrency=1)


async def test_the_in_flight_bound_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        await run_open_loop(
            arrivals(1), lambda a: a, Server(VirtualClock()).send, VirtualClock(), max_concurrency=0
        )
