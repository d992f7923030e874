"""The router's Prometheus metrics, in a registry of its own (one per app, not the global one)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tandem.router.endpoints import EndpointRegistry

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._request_children: dict[tuple[str, str, str], Counter] = {}
        self._e2e_children: dict[tuple[str, str], Histogram] = {}
        self.requests = Counter(
            "tandem_router_requests",
            "Requests by pool, route and outcome.",
            ["pool", "route", "outcome"],
            registry=r,
        )
        self.ttft = Histogram(
            "tandem_router_time_to_first_token_seconds",
            "Arrival to first streamed byte, streaming requests.",
            ["pool", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "tandem_router_request_duration_seconds",
            "Arrival to last byte.",
            ["pool", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.handoff_wait = Histogram(
            "tandem_router_handoff_wait_seconds",
            "Prefill answer to the last KV notification (LMCache).",
            ["pool"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter("tandem_router_rejected", "Requests refused with 429.", ["pool"], registry=r)
        self.fallbacks = Counter(
            "tandem_router_fallbacks",
            "Handoff-sized requests prefilled locally, by reason.",
            ["pool", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "tandem_router_retries",
            "Requests sent again to another endpoint, by stage.",
            ["pool", "stage"],
            registry=r,
        )
        self.notifications = Counter(
            "tandem_router_kv_notifications",
            "LMCache notifications received, by disposition.",
            ["disposition"],
            registry=r,
        )

    def count(self, pool: str, route: str, outcome: str) -> None:
        self._request_counter(pool, route, outcome).inc()

    def finished(self, pool: str, route: str, outcome: str, seconds: float) -> None:
        self._request_counter(pool, route, outcome).inc()
        key = (pool, route)
        duration = self._e2e_children.get(key)
        if duration is None:
            duration = self._e2e_children[key] = self.e2e.labels(pool, route)
        duration.observe(seconds)

    def _request_counter(self, pool: str, route: str, outcome: str) -> Counter:
        # labels() takes a lock and builds a key each time; the data path looks its children up here.
        key = (pool, route, outcome)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(pool, route, outcome)
        return counter

    def track(self, endpoints: EndpointRegistry, queue_depths: Callable[[], Mapping[str, int]]) -> None:
        """Expose live state read at scrape time, so the data path pays nothing for it."""
        self.registry.register(_LiveState(endpoints, queue_depths))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _LiveState(Collector):
    def __init__(self, endpoints: EndpointRegistry, queue_depths: Callable[[], Mapping[str, int]]) -> None:
        self._endpoints = endpoints
        self._queue_depths = queue_depths

    def collect(self) -> Iterator[Metric]:
        labels = ["pool", "role", "endpoint"]
        in_flight = GaugeMetricFamily(
            "tandem_router_endpoint_in_flight", "Open requests per endpoint.", labels=labels
        )
        healthy = GaugeMetricFamily("tandem_router_endpoint_healthy", "1 while in rotation.", labels=labels)
        for state in self._endpoints:
            key = [state.pool, state.role.value, state.url]
            in_flight.add_metric(key, state.in_flight)
            healthy.add_metric(key, 1 if state.healthy else 0)
        depth = GaugeMetricFamily(
            "tandem_router_queue_depth", "Requests waiting for admission.", labels=["pool"]
        )
        for pool, waiting in self._queue_depths().items():
            depth.add_metric([pool], waiting)
        yield from (in_flight, healthy, depth)
