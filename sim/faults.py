"""Faults on demand, for the router's reliability tests.

A :class:`Faults` value is the whole fault set; it comes from ``--faults JSON`` at start and is
replaced with ``POST /admin/faults`` (same JSON; omitted fields take their defaults, so ``{}``
clears everything). Generation requests (completions and chat) are affected as follows, in order:

- ``unhealthy``: ``GET /health`` answers 503 and requests fail with 503.
- ``fail_next`` (count, decremented per failed request) and ``error_rate`` (fraction, drawn from a
  generator seeded with the engine seed): the request fails with ``error_status``.
- ``delay_ms``: the request waits that long (wall clock, not scaled by ``--speed``) before it runs.
- ``hang``: the request waits until ``hang`` is cleared, then runs.
- ``close_after_chunks``: a stream's connection is closed abruptly after that many chunks.
- ``exit_after_chunks``: the process exits (status 1) after that many chunks of a stream.
- ``drop_notifications``: a prefiller sends no LMCache ``ProxyNotif`` (the KV still moves).
"""

from __future__ import annotations

import asyncio
import random

from pydantic import BaseModel, ConfigDict, Field


class Faults(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    unhealthy: bool = False
    fail_next: int = Field(default=0, ge=0, description="fail this many requests, then recover")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="fraction of requests that fail")
    error_status: int = Field(default=500, ge=400, le=599)
    delay_ms: float = Field(default=0.0, ge=0)
    hang: bool = False
    close_after_chunks: int | None = Field(default=None, ge=0)
    exit_after_chunks: int | None = Field(default=None, ge=0)
    drop_notifications: bool = False


class FaultState:
    """The faults in force in one process, and what they have used up."""

    def __init__(self, faults: Faults, seed: int) -> None:
        self._rng = random.Random(seed)
        self._released = asyncio.Event()
        self.faults = faults
        self._fail_next = 0
        self.set(faults)

    def set(self, faults: Faults) -> None:
        self.faults = faults
        self._fail_next = faults.fail_next
        if faults.hang:
            self._released.clear()
        else:
            self._released.set()

    def current(self) -> Faults:
        """The fault set as it stands, ``fail_next`` counting what is left."""
        return self.faults.model_copy(update={"fail_next": self._fail_next})

    def draw_failure(self) -> bool:
        """Whether this request fails (consumes one ``fail_next``)."""
        if self._fail_next > 0:
            self._fail_next -= 1
            return True
        return self.faults.error_rate > 0 and self._rng.random() < self.faults.error_rate

    async def hold(self) -> None:
        """Wait as ``delay_ms`` and ``hang`` say."""
        if self.faults.delay_ms > 0:
            await asyncio.sleep(self.faults.delay_ms / 1000)
        await self._released.wait()
