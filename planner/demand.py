"""The load and targets one plan is sized for, in the units the sizing works in."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist

from tandem.api import SloSpec, TokenStats, WorkloadSpec
from tandem.api.offload import OffloadTiers
from tandem.planner.lengths import LengthDistribution
from tandem.planner.prefix_reuse import PrefixReuse


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
    prompt_stats: TokenStats
    reuse: PrefixReuse  # which caches serve the reused prefixes on a prefill replica
    max_model_len: int | None = None  # the engines' context: longer requests are refused

    @classmethod
    def from_spec(
        cls,
        workload: WorkloadSpec,
        slo: SloSpec,
        offload: OffloadTiers | None = None,
        max_model_len: int | None = None,
    ) -> Demand:
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
            prompt_stats=workload.prompt_tokens,
            reuse=PrefixReuse.of(workload, offload),
            max_model_len=max_model_len,
        )

    def prefilled(self, share: float) -> LengthDistribution:
        """Prompt tokens prefilled when `share` of each prompt is computed (`computed` at the
        workload's reuse, every reused token a GPU hit)."""
        if share == 1 - self.reuse.fraction:
            return self.computed
        return LengthDistribution.from_stats(self.prompt_stats, share)

    def served_prompts(self, share: float) -> tuple[tuple[int, int, float], ...]:
        """(prompt tokens, tokens prefilled, probability) over the prompts the engines take, those
        whose output fits the context with them, `share` of each prefilled: the nodes the service
        moments are taken over (LengthDistribution.served_quadrature)."""
        limit = None if self.max_model_len is None else self.max_model_len - math.ceil(self.output_tokens)
        return _served_prompts(self.prompt, limit, share)

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


@lru_cache(maxsize=256)
def _served_prompts(
    prompt: LengthDistribution, limit: int | None, share: float
) -> tuple[tuple[int, int, float], ...]:
    """Demand.served_prompts, worked out once per distribution, limit and share: a plan sizes every
    layout over the same nodes."""
    return tuple(
        (length, max(1, round(length * share)), weight) for length, weight in prompt.served_quadrature(limit)
    )
