"""The clock a run keeps time by: seconds since it started, and a sleep until a given second.

The run uses :class:`MonotonicClock`; tests pass a virtual clock, so nothing they assert depends on
the machine's speed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the run started."""
        ...

    async def sleep_until(self, t_s: float) -> None: ...


class MonotonicClock:
    """Seconds since it was made, from ``time.perf_counter``."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() - self._start

    async def sleep_until(self, t_s: float) -> None:
        delay = t_s - self.now()
        if delay > 0:
            await asyncio.sleep(delay)
