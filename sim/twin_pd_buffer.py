"""The decoders' LMCache PD buffers over a twin run (sim/twin.py): which handoffs would find no room.

The in-process twin serves no router, so nothing admits its handoffs into a buffer. This replays
each decode engine's handoff legs as the router's admission counts them (router/pd_buffer.py): a
handoff holds `ceil(prompt / chunk_tokens)` chunks from when it reached the pool (its admission)
until its decode leg's first token (the decoder has read its KV); one whose chunks do not fit
beside those in flight when it arrives is *short* (the router would prefill it locally in mode
Auto, or answer 503 in mode Always) and holds nothing.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from tandem.sim.twin import EngineRun


@dataclass(frozen=True)
class BufferReplay:
    handoffs: int
    short: int  # found too few free chunks on their decoder
    peak_chunks: int  # the most chunks one decoder held

    @property
    def short_share(self) -> float:
        return self.short / self.handoffs if self.handoffs else 0.0


def replay(runs: Sequence[EngineRun], capacity_chunks: int, chunk_tokens: int) -> BufferReplay:
    handoffs = short = peak = 0
    for run in runs:
        legs = sorted(
            (s.arrival.origin, s.first_token, math.ceil(s.arrival.kv_tokens / chunk_tokens))
            for s in run.served
            if s.arrival.origin is not None and s.arrival.kv_tokens
        )
        held: list[tuple[float, int]] = []  # (release time, chunks)
        used = 0
        for admitted, read, chunks in legs:
            while held and held[0][0] <= admitted:
                used -= heapq.heappop(held)[1]
            handoffs += 1
            if used + chunks > capacity_chunks:
                short += 1
                continue
            used += chunks
            peak = max(peak, used)
            heapq.heappush(held, (math.inf if math.isnan(read) else read, chunks))
    return BufferReplay(handoffs, short, peak)
