"""What the autoscaler observes of a pool's traffic over one window, whichever the source. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from tandem.api import ObservedWorkload

# The percentile the status reports TTFT, ITL and token lengths at (the planner's p90).
STATUS_PERCENTILE = 90.0


@dataclass(frozen=True)
class Lengths:
    """Tokens per request: mean and p90."""

    mean: float
    p90: float


@dataclass(frozen=True)
class Observation:
    """The traffic of the last window, all router replicas summed. Latencies in milliseconds; None
    where the window holds no sample of that figure."""

    requests_per_second: float
    prompt_tokens: Lengths | None = None
    output_tokens: Lengths | None = None
    ttft_p90_ms: float | None = None
    itl_p90_ms: float | None = None
    ttft_ms: float | None = None  # at the SLO's percentile, what the planner's targets hold at
    itl_ms: float | None = None
    slo_attainment: float | None = None
    judged: float = 0.0  # requests the SLO counter judged in the window
    missing: tuple[str, ...] = ()  # router replicas that did not answer (the figures undercount)

    @property
    def complete(self) -> bool:
        return not self.missing

    def to_status(self) -> ObservedWorkload:
        def rounded(value: float | None) -> float | None:
            return None if value is None else float(f"{value:.3g}")

        return ObservedWorkload(
            requests_per_second=rounded(self.requests_per_second) or 0.0,
            prompt_tokens_mean=rounded(self.prompt_tokens.mean) if self.prompt_tokens else None,
            prompt_tokens_p90=rounded(self.prompt_tokens.p90) if self.prompt_tokens else None,
            output_tokens_mean=rounded(self.output_tokens.mean) if self.output_tokens else None,
            output_tokens_p90=rounded(self.output_tokens.p90) if self.output_tokens else None,
            ttft_p90_ms=rounded(self.ttft_p90_ms),
            itl_p90_ms=rounded(self.itl_p90_ms),
            slo_attainment=None if self.slo_attainment is None else round(self.slo_attainment, 3),
        )


# How far a figure must move before the status shows the new one: the status is written only when
# it changes, and a window's figures jitter from one interval to the next.
STATUS_TOLERANCE = 0.2


def _close(before: float | None, after: float | None) -> bool:
    if before is None or after is None:
        return before is after
    return abs(after - before) <= STATUS_TOLERANCE * max(abs(before), abs(after))


def steady_observed(previous: ObservedWorkload | None, new: ObservedWorkload) -> ObservedWorkload:
    """``previous`` while every figure of ``new`` is within ``STATUS_TOLERANCE`` of it, else ``new``."""
    if previous is None:
        return new
    before, after = previous.model_dump(), new.model_dump()
    return previous if all(_close(before[name], after[name]) for name in after) else new
