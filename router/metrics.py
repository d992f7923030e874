"""The router's Prometheus metrics, in a registry of its own (one per app, not the global one)."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from tandem.router.endpoints import EndpointState

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tandem_router_requests", "Requests by pool, route and outcome.", ["pool", "route", "outcome"], registry=r
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
        self.queue_depth = Gauge("tandem_router_queue_depth", "Requests waiting for admission.", ["pool"], registry=r)
        self.rejected = Counter("tandem_router_rejected", "Requests refused with 429.", ["pool"], registry=r)
        self.fallbacks = Counter(
            "tandem_router_fallbacks", "Handoff-sized requests prefilled locally, by reason.", ["pool", "reason"],
            registry=r,
        )  # fmt: skip
        self.retries = Counter(
            "tandem_router_retries", "Requests sent again to another endpoint, by stage.", ["pool", "stage"], registry=r
        )
        self.in_flight = Gauge(
            "tandem_router_endpoint_in_flight", "Open requests per endpoint.", ["pool", "role", "endpoint"], registry=r
        )
        self.notifications = Counter(
            "tandem_router_kv_notifications", "LMCache notifications received, by disposition.", ["disposition"],
            registry=r,
        )  # fmt: skip

    def observe_in_flight(self, state: EndpointState) -> None:
        self.in_flight.labels(state.pool, state.role.value, state.url).set(state.in_flight)

    def forget_endpoint(self, state: EndpointState) -> None:
        with contextlib.suppress(KeyError):  # never observed
            self.in_flight.remove(state.pool, state.role.value, state.url)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
