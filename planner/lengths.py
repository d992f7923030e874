"""Token-length distributions from the workload's mean and (optional) p90.

With a p90 the lengths are taken as log-normal with that mean and p90; without one, every request
has the mean length. The planner works on a fixed set of quantile points, so percentiles come from
a handful of cost-model evaluations. The moments of a prefill's service time, which grows faster
than the length (attention is quadratic) and whose square the queueing delay takes, come from a
quadrature that reaches into the tail instead (`served_quadrature`): the top quantile point stands
for the longest 1/16 of prompts, and its square misses most of theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from statistics import NormalDist

from tandem.api import TokenStats
from tandem.api.lengths import lognormal_mu, lognormal_sigma

QUANTILE_POINTS = 16
# The quadrature of the service moments: nodes evenly spaced in the normal's z from QUADRATURE_FROM.
QUADRATURE_NODES = 32
QUADRATURE_FROM = -6.0
QUADRATURE_TO = 6.0  # without a context limit
SPAN_BISECTION_STEPS = 20  # resolves a position to a millionth of the longest prompt
_STANDARD = NormalDist()


@dataclass(frozen=True)
class LengthDistribution:
    """A length distribution: its mean, log-normal sigma (0: fixed length) and quantile points."""

    mean: float
    sigma: float
    points: tuple[int, ...]

    @classmethod
    def from_stats(cls, stats: TokenStats, scale: float = 1.0) -> LengthDistribution:
        """From mean and p90, lengths multiplied by `scale` (e.g. the share not found in a prefix cache)."""
        mean = stats.mean * scale
        sigma = lognormal_sigma(stats.mean, stats.p90)
        if sigma == 0:
            length = max(1, round(mean))
            return cls(mean=mean, sigma=0.0, points=(length,) * QUANTILE_POINTS)
        mu = lognormal_mu(mean, sigma)
        raw = [
            math.exp(mu + sigma * _STANDARD.inv_cdf((i + 0.5) / QUANTILE_POINTS))
            for i in range(QUANTILE_POINTS)
        ]
        # The midpoint quantiles miss part of the upper tail: rescale so the points keep the mean.
        factor = mean / (sum(raw) / len(raw))
        return cls(mean=mean, sigma=sigma, points=tuple(max(1, round(x * factor)) for x in raw))

    def quantile(self, p: float) -> int:
        """Length at percentile `p` (0-100)."""
        if self.sigma == 0:
            return self.points[0]
        mu = lognormal_mu(self.mean, self.sigma)
        return max(1, round(math.exp(mu + self.sigma * _STANDARD.inv_cdf(p / 100))))

    def served_quadrature(self, limit: int | None) -> tuple[tuple[int, float], ...]:
        """(length, probability) nodes of the lengths up to `limit` (the longest prompt the engine
        takes; vLLM refuses longer ones: v1/engine/input_processor.py:587-591), the log-normal
        truncated there: midpoints of even steps in z, each weighted by the density. Moments of a
        cost that grows as a power of the length converge where equal-probability points do not
        (with sigma 1.28 the second moment of a prefill from the 16 points is half the
        truncated distribution's)."""
        if self.sigma == 0:
            return ((self.points[0], 1.0),) if limit is None or self.points[0] <= limit else ()
        mu = lognormal_mu(self.mean, self.sigma)
        top = QUADRATURE_TO if limit is None else (math.log(max(limit, 1)) - mu) / self.sigma
        top = min(top, QUADRATURE_TO)
        if top <= QUADRATURE_FROM:
            return ()
        step = (top - QUADRATURE_FROM) / QUADRATURE_NODES
        zs = [QUADRATURE_FROM + (i + 0.5) * step for i in range(QUADRATURE_NODES)]
        densities = [_STANDARD.pdf(z) for z in zs]
        total = sum(densities)
        return tuple(
            (max(1, round(math.exp(mu + self.sigma * z))), d / total)
            for z, d in zip(zs, densities, strict=True)
        )

    @property
    def longest(self) -> int:
        return max(self.points)

    @cached_property
    def attention_span(self) -> float:
        """Mean keys a prompt token attends to under causal attention: E[L^2] / (2 E[L])."""
        return sum(x * x for x in self.points) / (2 * sum(self.points))

    def span_quantile(self, p: float) -> float:
        """Keys that `p` percent of prompt tokens attend to at most: the token-weighted percentile of
        positions in the prompt, x with sum (L - x)+ = (1 - p / 100) sum L over the points."""
        above = (1 - p / 100) * sum(self.points)
        low, high = 0.0, float(self.longest)
        for _ in range(SPAN_BISECTION_STEPS):
            mid = (low + high) / 2
            if sum(max(x - mid, 0.0) for x in self.points) > above:
                low = mid
            else:
                high = mid
        return high
