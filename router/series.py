"""Labelled counters and histograms for the data path, turned into Prometheus families at scrape
time. prometheus_client takes a lock on every ``inc`` and ``observe`` (three for one histogram
observation) and checks its arguments each time: a request paid about 2.5 µs for its two
families there. A series here is a plain object the request holds or looks up in one dict; the
router's event loop is its only writer, and a scrape runs on that loop too.

The exposition is what prometheus_client's `Counter` and `Histogram` write, ``_created`` samples
included where `created` asks for them (tests/router/test_series.py compares the two).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

Labels = tuple[str, ...]


class Count:
    """One labelled counter."""

    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()


class Series:
    """One labelled histogram: counts per bucket (the last is +Inf), and the sum."""

    __slots__ = ("_bounds", "counts", "created", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.created = time.time()

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self._bounds, value)] += 1  # the first bound >= value: `le`
        self.total += value


class Counters(Collector):
    """A counter family (`name` without ``_total``) by its label values."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str], *, created: bool) -> None:
        self.name, self.documentation, self.labels, self._created = name, documentation, labels, created
        self.series: dict[Labels, Count] = {}

    def of(self, labels: Labels) -> Count:
        count = self.series.get(labels)
        if count is None:
            count = self.series[labels] = Count()
        return count

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, count in self.series.items():
            family.add_metric(labels, count.value, created=count.created if self._created else None)
        yield family


class Histograms(Collector):
    """A histogram family by its label values."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], bounds: Sequence[float], *, created: bool
    ) -> None:
        self.name, self.documentation, self.labels, self.bounds = name, documentation, labels, bounds
        self._created = created
        self.series: dict[Labels, Series] = {}

    def of(self, labels: Labels) -> Series:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = Series(self.bounds)
        return series

    def collect(self) -> Iterator[Metric]:
        yield self.family()

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        uppers = [*(repr(float(b)) for b in self.bounds), "+Inf"]
        for labels, series in self.series.items():
            cumulative, buckets = 0, []
            for upper, count in zip(uppers, series.counts, strict=True):
                cumulative += count
                buckets.append((upper, float(cumulative)))
            family.add_metric(list(labels), buckets, series.total)
            if self._created:  # prometheus_client writes it after each child's buckets, count, sum
                family.add_sample(
                    f"{self.name}_created", dict(zip(self.labels, labels, strict=True)), series.created
                )
        return family
