"""The load and targets one plan is sized for, in the units the sizing works in."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

from tandem.api import SloSpec, WorkloadSpec
from tandem.planner.lengths import LengthDistribution


@dataclass(frozen=True)
class Demand:
    """Arrival rate, length distributions and latency targets."""

    rps: float
    prompt: LengthDistribution  # prompt tokens as held in the KV cache and handed off
    computed: LengthDistribution  # prompt tokens actually prefilled: those no prefix cache holds
    output_tokens: float
    ttft_ms: float
    itl_ms: float
    percentile: float

    @classmethod
    def from_spec(cls, workload: WorkloadSpec, slo: SloSpec) -> Demand:
        return cls(
            rps=workload.requests_per_second,
            prompt=LengthDistribution.from_stats(workload.prompt_tokens),
            computed=LengthDistribution.from_stats(
                workload.prompt_tokens, 1 - workload.prefix_reuse_fraction
            ),
            output_tokens=float(workload.output_tokens.mean),
            ttft_ms=slo.ttft_ms,
            itl_ms=slo.itl_ms,
            percentile=slo.percentile,
        )

    @property
    def decode_context(self) -> float:
        """Mean context of a sequence while it decodes: its prompt and half its output."""
        return self.prompt.mean + self.output_tokens / 2

    @property
    def longest_request(self) -> int:
        """Tokens of the longest request the sizing considers (longest prompt point plus mean output)."""
        return self.prompt.longest + math.ceil(self.output_tokens)

    @property
    def z(self) -> float:
        """Standard normal quantile of the SLO percentile."""
        return NormalDist().inv_cdf(self.percentile / 100)

    def per_ms(self, rps: float) -> float:
        return rps / 1000
