"""Decoders' LMCache PD buffers, as this router replica accounts for them.

A decoder rank's buffer holds `PoolConfig.decoder_buffer_chunks` chunks (the planner's formula,
`tandem.planner.kv_cache`). LMCache offers no way to read how full it is, and the pool's router
replicas do not see each other's handoffs, so each replica admits handoffs into its share of it:
`1/replicas`. A handoff holds `ceil(prompt tokens / chunk_size)` chunks from its admission until the
decoder has read its KV (the decode leg's first token, or the drain leg's answer) or it is given
up. A decoder whose free chunks cannot take the smallest handoff (a prompt at the threshold) is
*short*; short for longer than a handoff timeout, it is *starved*: it takes no handoff until chunks
free, and the metrics say so (`tandem_router_decoder_pd_buffer_starved`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tandem.router.endpoints import EndpointState

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class BufferShare:
    """What this replica may fill of one decoder rank's PD buffer."""

    capacity: int  # chunks
    smallest: int  # chunks of the smallest handoff, at least 1

    def free(self, state: EndpointState) -> int:
        return self.capacity - state.buffer_reserved


def share_of(total_chunks: int, replicas: int, smallest: int) -> BufferShare:
    return BufferShare(total_chunks // max(1, replicas), max(1, smallest))


def _note(state: EndpointState, share: BufferShare | None, now: float) -> None:
    """Start or end the decoder's short spell after its reservations changed."""
    if share is None or share.free(state) >= share.smallest:
        state.buffer_short_since = None
    elif state.buffer_short_since is None:
        state.buffer_short_since = now


def starved(state: EndpointState, patience_s: float, now: float) -> bool:
    since = state.buffer_short_since
    return since is not None and now - since >= patience_s


class BufferHold:
    """A handoff's chunks on a decoder. Idempotent release: the stream and the error path may both
    release."""

    __slots__ = ("_chunks", "_clock", "_share", "_state")

    def __init__(self, state: EndpointState, chunks: int, share: BufferShare | None, clock: Clock) -> None:
        self._state = state
        self._chunks = chunks
        self._share = share
        self._clock = clock
        state.buffer_reserved += chunks
        _note(state, share, clock())

    @property
    def chunks(self) -> int:
        return self._chunks

    def release(self) -> None:
        if self._chunks:
            self._state.buffer_reserved -= self._chunks
            self._chunks = 0
            _note(self._state, self._share, self._clock())
