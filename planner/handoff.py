"""The prefill->decode handoff of a disaggregated plan: the link it takes and what it costs."""

from __future__ import annotations

from dataclasses import dataclass

from tandem.planner import cost
from tandem.planner.kv_cache import kv_transfer_streams
from tandem.planner.layouts import Layout
from tandem.planner.model import ModelShape
from tandem.planner.sizing import Outcome, Sized


@dataclass(frozen=True)
class Handoff:
    """KV moves from a prefill replica (its layout given per call) to the sized decode role."""

    model: ModelShape
    decode: Outcome
    link_gbps: float | None = None  # the request's override of the node network

    def gbps(self, prefill: Layout) -> float:
        """The slower node network of the two GPU types, unless the request names the link."""
        if self.link_gbps is not None:
            return self.link_gbps
        decode_gpu = self.decode.layout.gpu if isinstance(self.decode, Sized) else prefill.gpu
        return min(prefill.gpu.network_gbps, decode_gpu.network_gbps)

    def streams(self, prefill: Layout) -> int:
        decode_tp = self.decode.layout.tp if isinstance(self.decode, Sized) else prefill.tp
        return kv_transfer_streams(self.model, prefill.tp, decode_tp)

    def ms_per_token(self, prefill: Layout) -> float:
        link, streams = self.gbps(prefill), self.streams(prefill)
        return cost.kv_transfer_ms_per_token(self.model, link, prefill.calibration, streams)

    def transfer_ms(self, prefill: Layout, tokens: int) -> float:
        return prefill.calibration.kv_transfer_latency_ms + tokens * self.ms_per_token(prefill)

    def after_prefill_ms(self, prefill: Layout, tokens: int) -> float:
        """What TTFT adds after a prefill of `tokens`, as the sizing bounds it: the handoff and the
        first decode step. That step is taken at a full decode batch, its slowest, so the bound does
        not move with the load (and more load never buys a cheaper prefill pool)."""
        first_step = self.decode.full_step_ms if isinstance(self.decode, Sized) else 0.0
        return self.transfer_ms(prefill, tokens) + first_step

    def expected_after_prefill_ms(self, prefill: Layout, tokens: int) -> float:
        """The same at the planned load: the handoff, then the decode replica finishes the step in
        progress (half a step on average: vLLM schedules between steps) and runs the one that
        computes the last prompt token and samples the first, at the planned batch."""
        step = (self.decode.predicted_itl_ms or 0.0) if isinstance(self.decode, Sized) else 0.0
        return self.transfer_ms(prefill, tokens) + 1.5 * step
