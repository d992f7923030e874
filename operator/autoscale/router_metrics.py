"""The router's workload metrics, as one router replica exposes them on ``/metrics`` (its ``http``
port), read into cumulative figures. Pure.

The contract (the router defines these families; every one is labelled ``pool`` and ``model``, the
histograms and the SLO counter also ``route``):

    tandem_router_arrivals_total                  counter: requests that arrived
    tandem_router_prompt_tokens, _output_tokens   histograms of tokens per request
    tandem_router_ttft_seconds, _itl_seconds      histograms of time to first token, inter-token gaps
    tandem_router_slo_requests_total{result}      counter: met|missed_ttft|missed_itl|missed_both|failed

A replica's figures are summed over models and routes; only the pool's own series count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from tandem.operator.autoscale.histogram import Histogram

ARRIVALS = "tandem_router_arrivals_total"
PROMPT_TOKENS = "tandem_router_prompt_tokens"
OUTPUT_TOKENS = "tandem_router_output_tokens"
TTFT_SECONDS = "tandem_router_ttft_seconds"
ITL_SECONDS = "tandem_router_itl_seconds"
SLO_REQUESTS = "tandem_router_slo_requests_total"
SLO_MET = "met"
HISTOGRAMS = (PROMPT_TOKENS, OUTPUT_TOKENS, TTFT_SECONDS, ITL_SECONDS)


class MetricsTextError(ValueError):
    """The text is not the Prometheus exposition format."""


def _counter_increase(now: float, before: float) -> float:
    return now if now < before else now - before  # a counter that went down restarted from 0


@dataclass(frozen=True)
class RouterSample:
    """One router replica's cumulative workload figures at one scrape (or, differenced, what
    happened between two)."""

    arrivals: float = 0.0
    histograms: Mapping[str, Histogram] = field(default_factory=dict)  # by family (HISTOGRAMS)
    slo: Mapping[str, float] = field(default_factory=dict)  # requests by result

    def histogram(self, family: str) -> Histogram:
        return self.histograms.get(family, Histogram())

    def __add__(self, other: RouterSample) -> RouterSample:
        return RouterSample(
            self.arrivals + other.arrivals,
            {
                name: self.histogram(name) + other.histogram(name)
                for name in {*self.histograms, *other.histograms}
            },
            {
                result: self.slo.get(result, 0.0) + other.slo.get(result, 0.0)
                for result in {*self.slo, *other.slo}
            },
        )

    def increase_since(self, earlier: RouterSample) -> RouterSample:
        """What this replica served between ``earlier`` and now, each series reset-aware."""
        return RouterSample(
            _counter_increase(self.arrivals, earlier.arrivals),
            {name: value.increase_since(earlier.histogram(name)) for name, value in self.histograms.items()},
            {
                result: _counter_increase(value, earlier.slo.get(result, 0.0))
                for result, value in self.slo.items()
            },
        )


def _bound(text: str) -> float:
    return math.inf if text in ("+Inf", "Inf", "+inf", "inf") else float(text)


def parse_router_metrics(text: str, pool: str) -> RouterSample:
    """The pool's workload figures in one replica's exposition ``text``. Raises MetricsTextError."""
    arrivals = 0.0
    buckets: dict[str, dict[float, float]] = {name: {} for name in HISTOGRAMS}
    counts = dict.fromkeys(HISTOGRAMS, 0.0)
    sums = dict.fromkeys(HISTOGRAMS, 0.0)
    slo: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if labels.get("pool") != pool:
                    continue
                name, value = sample.name, float(sample.value)
                if name == ARRIVALS:
                    arrivals += value
                elif name == SLO_REQUESTS:
                    result = labels.get("result", "")
                    slo[result] = slo.get(result, 0.0) + value
                elif name.endswith("_bucket") and name[: -len("_bucket")] in buckets:
                    bound = _bound(labels["le"])
                    family_buckets = buckets[name[: -len("_bucket")]]
                    family_buckets[bound] = family_buckets.get(bound, 0.0) + value
                elif name.endswith("_count") and name[: -len("_count")] in counts:
                    counts[name[: -len("_count")]] += value
                elif name.endswith("_sum") and name[: -len("_sum")] in sums:
                    sums[name[: -len("_sum")]] += value
    except (ValueError, KeyError, IndexError) as exc:
        raise MetricsTextError(f"not Prometheus text: {exc}") from exc
    histograms = {
        name: Histogram(buckets[name], counts[name], sums[name]) for name in HISTOGRAMS if buckets[name]
    }
    return RouterSample(arrivals, histograms, slo)
