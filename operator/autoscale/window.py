"""From the router replicas' scrapes to the window's ``Observation``, as PromQL's ``rate`` and
``histogram_quantile`` over ``[window]`` would compute them from the same samples. Pure.

Per replica, the increase over the window adds the increases between its consecutive scrapes, each
reset-aware (a restarted router counts from zero again); the replicas' increases are summed, and
divided by the time the scrapes span. A replica first seen inside the window counts from its
first scrape on, as a new series does in Prometheus.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tandem.operator.autoscale.histogram import Histogram
from tandem.operator.autoscale.observation import STATUS_PERCENTILE, Lengths, Observation
from tandem.operator.autoscale.router_metrics import (
    ITL_SECONDS,
    OUTPUT_TOKENS,
    PROMPT_TOKENS,
    SLO_MET,
    TTFT_SECONDS,
    RouterSample,
)


@dataclass(frozen=True)
class Scrape:
    """Every router replica's figures at one moment (``at``: the autoscaler's clock, seconds)."""

    at: float
    routers: Mapping[str, RouterSample] = field(default_factory=dict)  # by pod
    missing: Mapping[str, str] = field(default_factory=dict)  # replicas that did not answer: pod -> why


def in_window(scrapes: Sequence[Scrape], window_s: float) -> list[Scrape]:
    """The scrapes a window ending at the newest covers: those within it, and the latest one at or
    before its start as the base (so the increase spans the whole window once history allows)."""
    if not scrapes:
        return []
    start = scrapes[-1].at - window_s
    base = max((i for i, scrape in enumerate(scrapes) if scrape.at <= start), default=0)
    return list(scrapes[base:])


def _increase(scrapes: Sequence[Scrape]) -> RouterSample:
    total = RouterSample()
    for router in {name for scrape in scrapes for name in scrape.routers}:
        readings = [scrape.routers[router] for scrape in scrapes if router in scrape.routers]
        for earlier, later in itertools.pairwise(readings):
            total = total + later.increase_since(earlier)
    return total


def _lengths(histogram: Histogram) -> Lengths | None:
    mean, p90 = histogram.mean, histogram.quantile(STATUS_PERCENTILE / 100)
    if mean is None or p90 is None:
        return None
    return Lengths(mean=mean, p90=p90)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


def window_observation(scrapes: Sequence[Scrape], window_s: float, percentile: float) -> Observation | None:
    """The window's observation; ``percentile``: the SLO's, which ``ttft_ms`` and ``itl_ms`` are
    read at. None until the scrapes span some time (two of them at least)."""
    covered = in_window(scrapes, window_s)
    if len(covered) < 2 or covered[-1].at <= covered[0].at:
        return None
    span = covered[-1].at - covered[0].at
    served = _increase(covered)
    ttft, itl = served.histogram(TTFT_SECONDS), served.histogram(ITL_SECONDS)
    judged = sum(served.slo.values())
    return Observation(
        requests_per_second=served.arrivals / span,
        prompt_tokens=_lengths(served.histogram(PROMPT_TOKENS)),
        output_tokens=_lengths(served.histogram(OUTPUT_TOKENS)),
        ttft_p90_ms=_ms(ttft.quantile(STATUS_PERCENTILE / 100)),
        itl_p90_ms=_ms(itl.quantile(STATUS_PERCENTILE / 100)),
        ttft_ms=_ms(ttft.quantile(percentile / 100)),
        itl_ms=_ms(itl.quantile(percentile / 100)),
        slo_attainment=served.slo.get(SLO_MET, 0.0) / judged if judged > 0 else None,
        judged=judged,
        # Bridged in between; missing at either end, a replica's increase is undercounted.
        missing=tuple(
            f"{pod}: {why}" for pod, why in sorted({**covered[0].missing, **covered[-1].missing}.items())
        ),
    )
