"""A virtual clock for the load generator (tandem.load.clock.Clock): a sleep yields to the event
loop once and moves time to its end at once, so nothing asserted depends on the machine's speed."""

from __future__ import annotations

import asyncio


class VirtualClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep_until(self, t_s: float) -> None:
        await asyncio.sleep(0)
        self.t = max(self.t, t_s)
