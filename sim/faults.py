"""Faults on demand, for the router's reliability tests.

A :class:`Faults` value is the whole fault set; it comes from ``--faults JSON`` at start and is
replaced with ``POST /admin/faults`` (same JSON; omitted fields take their defaults, so ``{}``
clears everything). Generation requests (completions and chat) are affected as follows, in order:

- ``unhealthy``: ``GET /health`` answers 503 and requests fail with 503.
- ``fail_next`` (count, decremented per failed request) and ``error_rate`` (fraction, drawn from a
  generator seeded with the engine seed): the request fails with ``error_status``.
- ``delay_ms``: the request waits that long (wall clock, not scaled by ``--speed``) before it runs.
- ``hang``: the request waits until ``hang`` is cleared, then runs.
- ``trickle_ms``: every chunk of a stream waits that long (wall clock) before it is sent.
- ``close_after_chunks``: a stream's connection is closed abruptly after that many chunks.
- ``exit_after_chunks``: the process exits (status 1) after that many chunks of a stream.

KV handoff faults (each acts only on the end it names):

- ``drop_notifications`` / ``drop_notification_rate``: an LMCache prefiller sends no ``ProxyNotif``
  (always / for that fraction of notifications, seeded); the KV still moves.
- ``junk_notification``: before each ``ProxyNotif`` an LMCache prefiller pushes a bad message to the
  proxy port: ``oversized`` (a ``ProxyNotif`` whose ``req_id`` is ``junk_notification_bytes`` long),
  ``malformed`` (bytes that are not msgpack), ``wrong_type`` (msgpack of another shape) or
  ``multipart`` (a valid ``ProxyNotif`` with an extra frame). The real notification follows.
- ``pd_buffer_held_chunks``: an LMCache decoder keeps that many chunks of every rank's PD buffer
  allocated to nobody (as many as are free), as decode legs that never came leave them; lowering it
  frees them.
- ``expire_kv_leases``: a NIXL prefiller's block leases expire at once (the blocks are freed when the
  prefill answers; a decode leg then reads freed blocks and its answer is garbage).
- ``drop_heartbeats``: a NIXL decoder sends no lease-renewing heartbeats to prefillers.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

JunkNotification = Literal["oversized", "malformed", "wrong_type", "multipart"]


class Faults(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    unhealthy: bool = False
    fail_next: int = Field(default=0, ge=0, description="fail this many requests, then recover")
    error_rate: float = Field(default=0.0, ge=0, le=1, description="fraction of requests that fail")
    error_status: int = Field(default=500, ge=400, le=599)
    delay_ms: float = Field(default=0.0, ge=0)
    hang: bool = False
    trickle_ms: float = Field(default=0.0, ge=0, description="wait before every chunk of a stream")
    close_after_chunks: int | None = Field(default=None, ge=0)
    exit_after_chunks: int | None = Field(default=None, ge=0)
    drop_notifications: bool = False
    drop_notification_rate: float = Field(default=0.0, ge=0, le=1)
    junk_notification: JunkNotification | None = None
    junk_notification_bytes: int = Field(default=16 * 1024 * 1024, ge=1, le=1024**3)
    pd_buffer_held_chunks: int = Field(default=0, ge=0)
    expire_kv_leases: bool = False
    drop_heartbeats: bool = False

    @property
    def shapes_streams(self) -> bool:
        """Whether a stream's chunks are delayed, cut or followed by the process's exit."""
        return (
            self.trickle_ms > 0 or self.close_after_chunks is not None or self.exit_after_chunks is not None
        )


class FaultState:
    """The faults in force in one process, and what they have used up."""

    def __init__(self, faults: Faults, seed: int) -> None:
        self._rng = random.Random(seed)
        self._released = asyncio.Event()
        self._listeners: list[Callable[[Faults], None]] = []
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
        for listener in self._listeners:
            listener(faults)

    def subscribe(self, listener: Callable[[Faults], None]) -> None:
        """Call ``listener`` with the fault set now and whenever it changes."""
        self._listeners.append(listener)
        listener(self.faults)

    def current(self) -> Faults:
        """The fault set as it stands, ``fail_next`` counting what is left."""
        return self.faults.model_copy(update={"fail_next": self._fail_next})

    def draw_failure(self) -> bool:
        """Whether this request fails (consumes one ``fail_next``)."""
        if self._fail_next > 0:
            self._fail_next -= 1
            return True
        return self.faults.error_rate > 0 and self._rng.random() < self.faults.error_rate

    def draw_dropped_notification(self) -> bool:
        """Whether this LMCache notification is dropped."""
        rate = self.faults.drop_notification_rate
        return self.faults.drop_notifications or (rate > 0 and self._rng.random() < rate)

    async def hold(self) -> None:
        """Wait as ``delay_ms`` and ``hang`` say."""
        if self.faults.delay_ms > 0:
            await asyncio.sleep(self.faults.delay_ms / 1000)
        await self._released.wait()
