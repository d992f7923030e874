"""Token-length distributions from the workload's mean and (optional) p90.

With a p90 the lengths are taken as log-normal with that mean and p90; without one, every request
has the mean length. The planner works on a fixed set of quantile points, so queueing moments and
percentiles come from a handful of cost-model evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from statistics import NormalDist

from tandem.api import TokenStats

QUANTILE_POINTS = 16
_STANDARD = NormalDist()
_Z90 = _STANDARD.inv_cdf(0.9)


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
        mu = math.log(mean) - sigma * sigma / 2
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
        mu = math.log(self.mean) - self.sigma * self.sigma / 2
        return max(1, round(math.exp(mu + self.sigma * _STANDARD.inv_cdf(p / 100))))

    @property
    def longest(self) -> int:
        return max(self.points)

    @cached_property
    def attention_span(self) -> float:
        """Mean keys a prompt token attends to under causal attention: E[L^2] / (2 E[L])."""
        return sum(x * x for x in self.points) / (2 * sum(self.points))


def lognormal_sigma(mean: float, p90: float | None) -> float:
    """Sigma of the log-normal with this mean and p90 (0 when no spread is given).

    Solves ln(p90 / mean) = z90 * sigma - sigma^2 / 2 for its smaller root. A p90 above
    e^(z90^2 / 2) = 2.27 times the mean has no log-normal fit; sigma is capped at z90 there.
    """
    if p90 is None or p90 <= mean:
        return 0.0
    discriminant = _Z90 * _Z90 - 2 * math.log(p90 / mean)
    return _Z90 - math.sqrt(discriminant) if discriminant > 0 else _Z90
