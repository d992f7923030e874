"""The router's workload signals: what arrives at each pool and how it is served, the families the
operator's autoscaler reads (their contract: ``operator/autoscale/router_metrics.py``).

    tandem_router_arrivals_total{pool,model}                     requests that arrived
    tandem_router_prompt_tokens{pool,model,route}                histogram, tokens per request
    tandem_router_output_tokens{pool,model,route}                histogram, tokens per request
    tandem_router_ttft_seconds{pool,model,route}                 histogram, arrival to first token
    tandem_router_itl_seconds{pool,model,route}                  histogram, gaps between token chunks
    tandem_router_slo_requests_total{pool,model,route,result}    streamed requests by SLO verdict
    tandem_router_tokens_total{pool,model,direction}             prompt (in) and output (out) tokens

``model`` is the pool's served model, never the client's string, and ``route`` one of the router's
routes: the label sets stay bounded whatever clients send. Every series of a pool exists from the
pool's first sight, at 0, so a rate over it is 0, not absent, before traffic.

Series keep plain lists of bucket counts (series.py), counted by bisection and turned into
Prometheus families at scrape time: the data path observes every token gap, and
prometheus_client's ``observe`` (a lock per call) costs about six times as much. A pool's series are
looked up once, when the pool is declared (`PoolSignals`), not on each request.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from tandem.api import SloVerdict
from tandem.router.series import Histograms

TOKEN_BUCKETS = tuple(sorted({round(2 ** (k / 2)) for k in range(8, 35)}))  # 16 ... 131072, sqrt(2) apart
TTFT_BUCKETS = (
    *(0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75),
    *(1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0),
)
ITL_BUCKETS = (
    *(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03, 0.035, 0.04),
    *(0.045, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.125, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0),
)
ROUTES = ("direct", "pd", "none")  # "none": refused or failed before a route was chosen


class RouteSignals:
    """The series one pool's requests of one route feed."""

    __slots__ = ("itl", "output", "prompt", "slo", "tokens", "ttft")

    def __init__(self, signals: WorkloadSignals, pool: str, model: str, route: str) -> None:
        labels = (pool, model, route)
        self.prompt = signals.prompt.of(labels)
        self.output = signals.output.of(labels)
        self.ttft = signals.ttft.of(labels)
        self.itl = signals.itl.of(labels)
        self.slo = signals.slo_counts(labels)
        self.tokens = signals.token_counts(pool, model)


class PoolSignals:
    """One pool's series for its served model: its arrivals and each route's `RouteSignals`."""

    __slots__ = ("arrivals", "routes")

    def __init__(self, signals: WorkloadSignals, pool: str, model: str) -> None:
        self.arrivals = 0
        self.routes = {route: signals.route(pool, model, route) for route in ROUTES}

    def arrived(self) -> None:
        self.arrivals += 1


def _histograms(name: str, documentation: str, bounds: Sequence[float]) -> Histograms:
    return Histograms(name, documentation, ("pool", "model", "route"), bounds, created=False)


class WorkloadSignals(Collector):
    def __init__(self) -> None:
        self.prompt = _histograms("tandem_router_prompt_tokens", "Prompt tokens per request.", TOKEN_BUCKETS)
        self.output = _histograms(
            "tandem_router_output_tokens", "Output tokens per successful request.", TOKEN_BUCKETS
        )
        self.ttft = _histograms(
            "tandem_router_ttft_seconds", "Arrival to the first token, streamed requests.", TTFT_BUCKETS
        )
        self.itl = _histograms(
            "tandem_router_itl_seconds",
            "Gaps between streamed token chunks, as clients see them.",
            ITL_BUCKETS,
        )
        self._pools: dict[tuple[str, str], PoolSignals] = {}
        self._slo: dict[tuple[str, str, str], dict[SloVerdict, int]] = {}
        self._tokens: dict[tuple[str, str], list[int]] = {}  # [in, out]
        self._routes: dict[tuple[str, str, str], RouteSignals] = {}

    def declare(self, pool: str, model: str) -> PoolSignals:
        """The pool's series, created at 0 on its first sight."""
        signals = self._pools.get((pool, model))
        if signals is None:
            signals = self._pools[(pool, model)] = PoolSignals(self, pool, model)
        return signals

    def route(self, pool: str, model: str, route: str) -> RouteSignals:
        key = (pool, model, route)
        signals = self._routes.get(key)
        if signals is None:
            signals = self._routes[key] = RouteSignals(self, pool, model, route)
        return signals

    def slo_counts(self, labels: tuple[str, str, str]) -> dict[SloVerdict, int]:
        return self._slo.setdefault(labels, dict.fromkeys(SloVerdict, 0))

    def token_counts(self, pool: str, model: str) -> list[int]:
        return self._tokens.setdefault((pool, model), [0, 0])

    def collect(self) -> Iterator[Metric]:
        arrivals = CounterMetricFamily(
            "tandem_router_arrivals", "Requests that arrived, admitted or not.", labels=["pool", "model"]
        )
        for (pool, model), signals in self._pools.items():
            arrivals.add_metric([pool, model], signals.arrivals)
        slo = CounterMetricFamily(
            "tandem_router_slo_requests",
            "Streamed requests by their verdict against the pool's TTFT and ITL (mean per token) targets.",
            labels=["pool", "model", "route", "result"],
        )
        for labels, verdicts in self._slo.items():
            for verdict, count in verdicts.items():
                slo.add_metric([*labels, verdict.value], count)
        tokens = CounterMetricFamily(
            "tandem_router_tokens",
            "Prompt tokens (in) and output tokens (out) of the requests served.",
            labels=["pool", "model", "direction"],
        )
        for (pool, model), (tokens_in, tokens_out) in self._tokens.items():
            tokens.add_metric([pool, model, "in"], tokens_in)
            tokens.add_metric([pool, model, "out"], tokens_out)
        yield arrivals
        yield from (h.family() for h in (self.prompt, self.output, self.ttft, self.itl))
        yield from (slo, tokens)
