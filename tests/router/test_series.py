"""The data path's lock-free series (router/series.py) write what prometheus_client's Counter and
Histogram write for the same observations: /metrics did not change when the router's request
families moved to them."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from tandem.router.series import Counters, Histograms

BOUNDS = (0.005, 0.1, 1, 30)
OBSERVED = [(("a", "direct"), 0.001), (("a", "direct"), 0.1), (("b", "pd"), 2.0), (("a", "direct"), 99.0)]


def _without_created_times(text: bytes) -> str:
    return re.sub(r"(_created\{[^}]*\}) \S+", r"\1 T", text.decode())


def test_counters_and_histograms_write_what_prometheus_client_writes() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("demo_requests", "Requests.", ["pool", "route"], registry=theirs)
    histogram = Histogram("demo_seconds", "Seconds.", ["pool", "route"], buckets=BOUNDS, registry=theirs)
    counters = Counters("demo_requests", "Requests.", ("pool", "route"), created=True)
    histograms = Histograms("demo_seconds", "Seconds.", ("pool", "route"), BOUNDS, created=True)
    ours.register(counters)
    ours.register(histograms)
    for labels, value in OBSERVED:
        counter.labels(*labels).inc()
        histogram.labels(*labels).observe(value)
        counters.of(labels).value += 1
        histograms.of(labels).observe(value)
    expected = _without_created_times(generate_latest(theirs))
    assert "demo_seconds_created" in expected and 'le="+Inf"' in expected
    assert _without_created_times(generate_latest(ours)) == expected


def test_created_samples_are_left_out_when_not_asked_for() -> None:
    registry = CollectorRegistry()
    histograms = Histograms("demo_tokens", "Tokens.", ("pool",), BOUNDS, created=False)
    registry.register(histograms)
    histograms.of(("a",)).observe(3)
    text = generate_latest(registry).decode()
    assert 'demo_tokens_count{pool="a"} 1.0' in text and "_created" not in text
