"""Admission: bounded concurrency, queue order by policy, 429 when the queue is full."""

from __future__ import annotations

import asyncio

import pytest

from tandem.api.spec import AdmissionPolicy
from tandem.router.admission import AdmissionQueue, Ticket
from tandem.router.errors import QueueFullError


async def _admitted_order(policy: AdmissionPolicy, tickets: list[Ticket]) -> list[int]:
    queue = AdmissionQueue("p", policy, max_queue=10, capacity=lambda: 1, retry_after_s=1)
    await queue.acquire(Ticket())  # holds the only slot
    order: list[int] = []

    async def wait(index: int, ticket: Ticket) -> None:
        await queue.acquire(ticket)
        order.append(index)
        queue.release()

    waiters = [asyncio.create_task(wait(i, t)) for i, t in enumerate(tickets)]
    await asyncio.sleep(0)
    assert queue.depth == len(tickets)
    queue.release()
    await asyncio.gather(*waiters)
    return order


@pytest.mark.parametrize(
    ("policy", "tickets", "expected"),
    [
        (AdmissionPolicy.FIFO, [Ticket(priority=5), Ticket(priority=-1), Ticket(priority=0)], [0, 1, 2]),
        (AdmissionPolicy.PRIORITY, [Ticket(priority=5), Ticket(priority=-1), Ticket(priority=0)], [1, 2, 0]),
        (AdmissionPolicy.PRIORITY, [Ticket(priority=1), Ticket(priority=1), Ticket(priority=0)], [2, 0, 1]),
        (AdmissionPolicy.SLO, [Ticket(deadline=9.0), Ticket(deadline=3.0), Ticket(deadline=5.0)], [1, 2, 0]),
    ],
)
async def test_waiters_are_admitted_in_policy_order(
    policy: AdmissionPolicy, tickets: list[Ticket], expected: list[int]
) -> None:
    assert await _admitted_order(policy, tickets) == expected


async def test_full_queue_rejects_with_retry_after() -> None:
    queue = AdmissionQueue("pool-a", AdmissionPolicy.FIFO, max_queue=1, capacity=lambda: 1, retry_after_s=3)
    await queue.acquire(Ticket())
    waiting = asyncio.create_task(queue.acquire(Ticket()))
    await asyncio.sleep(0)
    with pytest.raises(QueueFullError) as caught:
        await queue.acquire(Ticket())
    assert caught.value.status == 429
    assert caught.value.headers() == {"Retry-After": "3"}
    waiting.cancel()


async def test_cancelled_waiter_leaves_the_queue_and_frees_nothing() -> None:
    queue = AdmissionQueue("p", AdmissionPolicy.FIFO, max_queue=5, capacity=lambda: 1, retry_after_s=1)
    await queue.acquire(Ticket())
    gone = asyncio.create_task(queue.acquire(Ticket()))
    stays = asyncio.create_task(queue.acquire(Ticket()))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    assert queue.depth == 1
    queue.release()
    await asyncio.wait_for(stays, 1)
    assert queue.active == 1 and queue.depth == 0


async def test_growing_capacity_admits_waiters() -> None:
    capacity = [1]
    queue = AdmissionQueue(
        "p", AdmissionPolicy.FIFO, max_queue=5, capacity=lambda: capacity[0], retry_after_s=1
    )
    await queue.acquire(Ticket())
    waiters = [asyncio.create_task(queue.acquire(Ticket())) for _ in range(2)]
    await asyncio.sleep(0)
    capacity[0] = 3  # discovery found more decoders
    queue.wake()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert queue.active == 3


async def test_zero_queue_means_reject_at_capacity() -> None:
    queue = AdmissionQueue("p", AdmissionPolicy.FIFO, max_queue=0, capacity=lambda: 2, retry_after_s=1)
    async with queue.slot(Ticket()), queue.slot(Ticket()):
        with pytest.raises(QueueFullError):
            await queue.acquire(Ticket())
    assert queue.active == 0
