"""Open-loop dispatch: each request goes out when the schedule says, not when an earlier one ends.

A bound on the requests in flight (``max_concurrency``) protects the client's and the server's
sockets. An arrival that finds every slot taken waits for one, as under ``vllm bench serve
--max-concurrency``, and is counted as *held*; its record keeps when it was due and when it went
out. A run with held arrivals was not open-loop for them, and its summary says so.

The clock is a parameter: the run's monotonic clock, or a virtual one in tests. Each arrival is
prepared (its prompt built) before the dispatcher sleeps until it is due, so the work does not
delay the send.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from tandem.load.client import Measured
from tandem.load.clock import Clock
from tandem.load.records import ErrorKind, RequestRecord
from tandem.load.workload import Arrival

Prepared = TypeVar("Prepared")


@dataclass
class Progress:
    """Live counts of a run, for a progress display."""

    due: int = 0  # arrivals dispatched so far
    waiting: int = 0  # held arrivals still waiting for a slot
    in_flight: int = 0
    completed: int = 0
    failed: int = 0
    held: int = 0


def record_of(arrival: Arrival, held: bool, measured: Measured) -> RequestRecord:
    return RequestRecord(
        index=arrival.index,
        scheduled_s=arrival.at_s,
        prompt_tokens=arrival.prompt_tokens,
        output_tokens=arrival.output_tokens,
        held=held,
        sent_s=measured.sent_s,
        ended_s=measured.ended_s,
        ttft_s=measured.ttft_s,
        itl_s=tuple(measured.itl_s),
        latency_s=measured.latency_s,
        server_prompt_tokens=measured.server_prompt_tokens,
        server_output_tokens=measured.server_output_tokens,
        finish_reason=measured.finish_reason,
        error=measured.error,
        status=measured.status,
        detail=measured.detail,
    )


async def run_open_loop(
    arrivals: Iterable[Arrival],
    prepare: Callable[[Arrival], Prepared],
    send: Callable[[Prepared], Awaitable[Measured]],
    clock: Clock,
    max_concurrency: int,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
) -> list[RequestRecord]:
    """Dispatch every arrival on time and wait for all of them; their records, in arrival order.

    Setting ``stop`` ends the run early: no more arrivals, and the requests not yet finished are
    cancelled (recorded as ``cancelled``). ``send`` must turn every failure into its ``Measured``.
    """
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency {max_concurrency} must be at least 1")
    stop = stop or asyncio.Event()
    counts = progress or Progress()
    slots = asyncio.Semaphore(max_concurrency)
    records: list[RequestRecord] = []
    requests: set[asyncio.Task[None]] = set()

    async def one(arrival: Arrival, prepared: Prepared) -> None:
        held = slots.locked()
        counts.held += held
        counts.waiting += held
        sent_s: float | None = None
        try:
            async with slots:
                counts.waiting -= held
                sent_s = clock.now()
                counts.in_flight += 1
                try:
                    measured = await send(prepared)
                finally:
                    counts.in_flight -= 1
        except asyncio.CancelledError:
            if sent_s is None:
                counts.waiting -= held
            counts.failed += 1
            records.append(
                RequestRecord(
                    index=arrival.index,
                    scheduled_s=arrival.at_s,
                    prompt_tokens=arrival.prompt_tokens,
                    output_tokens=arrival.output_tokens,
                    held=held,
                    sent_s=sent_s,
                    ended_s=clock.now(),
                    error=ErrorKind.CANCELLED,
                    detail="the run stopped before the request finished",
                )
            )
            raise
        record = record_of(arrival, held, measured)
        counts.completed += record.ok
        counts.failed += not record.ok
        records.append(record)

    async def dispatch() -> None:
        for arrival in arrivals:
            prepared = prepare(arrival)
            await clock.sleep_until(arrival.at_s)
            if stop.is_set():
                return
            requests.add(asyncio.create_task(one(arrival, prepared)))
            counts.due += 1

    dispatcher = asyncio.create_task(dispatch())
    stopped = asyncio.create_task(stop.wait())
    try:
        pending: set[asyncio.Task[None]] = {dispatcher}
        while pending and not stop.is_set():
            await asyncio.wait(pending | {stopped}, return_when=asyncio.FIRST_COMPLETED)
            failure = dispatcher.exception() if dispatcher.done() else None
            if failure is not None:
                raise failure
            pending = {task for task in requests | {dispatcher} if not task.done()}
    finally:
        dispatcher.cancel()
        stopped.cancel()
        for task in requests:
            task.cancel()
        outcomes = await asyncio.gather(*requests, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome
    return sorted(records, key=lambda r: r.index)
