"""The reconcile queue: triggers coalesce, a key never runs twice at once, failures back off."""

from __future__ import annotations

import asyncio
import itertools

from tandem.operator.workqueue import WorkQueue


async def test_many_triggers_during_a_reconcile_make_one_more() -> None:
    runs: list[str] = []
    release = asyncio.Event()

    async def process(key: str) -> None:
        runs.append(key)
        if len(runs) == 1:
            await release.wait()

    queue: WorkQueue[str] = WorkQueue(process, workers=4)
    queue.start()
    try:
        queue.add("pool")
        await asyncio.sleep(0.01)
        for _ in range(50):
            queue.add("pool")
        await asyncio.sleep(0.01)
        assert runs == ["pool"]  # the other workers did not start the same key
        release.set()
        await asyncio.sleep(0.05)
        assert runs == ["pool", "pool"]
    finally:
        await queue.stop()


async def test_different_keys_run_concurrently() -> None:
    active: set[str] = set()
    peak = 0

    async def process(key: str) -> None:
        nonlocal peak
        active.add(key)
        peak = max(peak, len(active))
        await asyncio.sleep(0.02)
        active.discard(key)

    queue: WorkQueue[str] = WorkQueue(process, workers=3)
    queue.start()
    try:
        for key in "abc":
            queue.add(key)
        await asyncio.sleep(0.1)
        assert peak == 3
    finally:
        await queue.stop()


async def test_failures_retry_with_growing_delays_until_success() -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def process(key: str) -> None:
        times.append(loop.time())
        if len(times) < 4:
            raise RuntimeError("API down")

    queue: WorkQueue[str] = WorkQueue(process, workers=1, base_delay=0.02, max_delay=0.05)
    queue.start()
    try:
        queue.add("pool")
        await asyncio.sleep(0.3)
        assert len(times) == 4  # three failures, then success, then nothing more
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert 0.015 < gaps[0] < gaps[1] and gaps[2] < 0.09  # 0.02, 0.04, then capped at 0.05
    finally:
        await queue.stop()


async def test_forgotten_key_is_not_retried() -> None:
    calls = 0

    async def process(key: str) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("gone")

    queue: WorkQueue[str] = WorkQueue(process, workers=1, base_delay=0.03)
    queue.start()
    try:
        queue.add("pool")
        await asyncio.sleep(0.01)
        queue.forget("pool")
        await asyncio.sleep(0.1)
        assert calls == 1
    finally:
        await queue.stop()
