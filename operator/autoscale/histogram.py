"""Cumulative Prometheus histograms as the autoscaler reads them: added up, differenced across a
counter reset, and read at a quantile exactly as PromQL's ``histogram_quantile`` does. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Histogram:
    """One histogram's cumulative counts: ``buckets`` maps each upper bound (``le``, ``inf`` for
    ``+Inf``) to the observations at or below it; ``count`` and ``sum`` as exposed."""

    buckets: Mapping[float, float] = field(default_factory=dict)
    count: float = 0.0
    sum: float = 0.0

    def __add__(self, other: Histogram) -> Histogram:
        """Buckets summed by bound, as ``sum by (le)`` does."""
        buckets = dict(self.buckets)
        for bound, value in other.buckets.items():
            buckets[bound] = buckets.get(bound, 0.0) + value
        return Histogram(buckets, self.count + other.count, self.sum + other.sum)

    def increase_since(self, earlier: Histogram) -> Histogram:
        """What was observed between ``earlier`` and this reading of the same series. A count or a
        bucket that went down means the process restarted (Prometheus' counter reset): everything
        this reading holds was observed since."""
        reset = self.count < earlier.count or any(
            value < earlier.buckets.get(bound, 0.0) for bound, value in self.buckets.items()
        )
        if reset:
            return self
        return Histogram(
            {bound: value - earlier.buckets.get(bound, 0.0) for bound, value in self.buckets.items()},
            self.count - earlier.count,
            self.sum - earlier.sum,
        )

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count > 0 else None

    def quantile(self, q: float) -> float | None:
        """PromQL's ``histogram_quantile(q, ...)`` over these buckets (Prometheus
        promql/quantile.go ``bucketQuantile``): linear within the bucket holding rank q x total; in
        the ``+Inf`` bucket, the highest finite bound. None where PromQL answers NaN (no
        observations, no ``+Inf`` bucket, fewer than two buckets)."""
        bounds = sorted(self.buckets)
        if len(bounds) < 2 or bounds[-1] != math.inf:
            return None
        counts = _monotonic(self.buckets[bound] for bound in bounds)
        total = counts[-1]
        if total <= 0:
            return None
        rank = q * total
        index = next(i for i, count in enumerate(counts) if count >= rank)
        if index == len(bounds) - 1:
            return bounds[-2]
        upper = bounds[index]
        if index == 0 and upper <= 0:
            return upper
        lower, below = (bounds[index - 1], counts[index - 1]) if index > 0 else (0.0, 0.0)
        in_bucket = counts[index] - below
        return lower + (upper - lower) * ((rank - below) / in_bucket if in_bucket > 0 else 1.0)


def _monotonic(counts: Iterable[float]) -> list[float]:
    """Cumulative counts made non-decreasing, as PromQL fixes buckets scraped at slightly
    different moments."""
    fixed: list[float] = []
    for count in counts:
        fixed.append(max(count, fixed[-1]) if fixed else count)
    return fixed
