"""The router's Prometheus metrics, in a registry of its own (one per app, not the global one)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tandem.router.endpoints import EndpointRegistry
from tandem.router.series import Counters, Histograms
from tandem.router.signals import WorkloadSignals

BufferReport = tuple[str, str, int, bool]  # pool, decoder URL, free chunks, starved
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class RouterMetrics:
    def __init__(self, *, per_endpoint: bool = False) -> None:
        """`per_endpoint`: label the endpoint families with each engine's URL (debug mode); by
        default they are summed per pool and role, and /metrics names no engine."""
        self._per_endpoint = per_endpoint
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The two families every request feeds: lock-free series (series.py).
        self._requests = Counters(
            "tandem_router_requests",
            "Requests by pool, route and outcome.",
            ("pool", "route", "outcome"),
            created=True,
        )
        r.register(self._requests)
        self.workload = WorkloadSignals()
        r.register(self.workload)
        self._e2e = Histograms(
            "tandem_router_request_duration_seconds",
            "Arrival to last byte.",
            ("pool", "route"),
            _LATENCY_BUCKETS,
            created=True,
        )
        r.register(self._e2e)
        self.handoff_wait = Histogram(
            "tandem_router_handoff_wait_seconds",
            "Prefill answer to the KV at the decoder: the last notification (LMCache), the decode leg's"
            " first bytes, streams only (NIXL).",
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
        self._admission_mode = Gauge(
            "tandem_router_admission_mode",
            "The order an adaptive admission policy keeps now: 1 for its mode, 0 for those it left.",
            ["pool", "mode"],
            registry=r,
        )
        self._modes: dict[str, str] = {}
        self.endpoint_failures = Counter(
            "tandem_router_endpoint_failures",
            "Requests an endpoint failed, by how (connect, broke, error, timeout, no_notification).",
            ["pool", "role", "failure"],
            registry=r,
        )
        self.ejections = Counter(
            "tandem_router_endpoint_ejections",
            "Endpoints taken out of rotation by outlier detection, by the failure that did it.",
            ["pool", "role", "failure"],
            registry=r,
        )
        self.notifications = Counter(
            "tandem_router_kv_notifications",
            "LMCache notifications received, by disposition.",
            ["disposition"],
            registry=r,
        )
        self.notify_disconnects = Counter(
            "tandem_router_kv_notify_disconnects",
            "Senders cut off the notification port: a prefiller restarting, or a frame over the size limit.",
            registry=r,
        )
        self.handoff_endings = Counter(
            "tandem_router_handoff_drains",
            "Handoffs their request left unfinished, ended in the background, by outcome.",
            ["pool", "outcome"],
            registry=r,
        )

    def admission_mode(self, pool: str, mode: str | None) -> None:
        """The pool's adaptive admission keeps `mode` now (None: its policy has no modes)."""
        before = self._modes.pop(pool, None)
        if before is not None:
            self._admission_mode.labels(pool, before).set(0)
        if mode is not None:
            self._admission_mode.labels(pool, mode).set(1)
            self._modes[pool] = mode

    def count(self, pool: str, route: str, outcome: str) -> None:
        self._requests.of((pool, route, outcome)).value += 1

    def finished(self, pool: str, route: str, outcome: str, seconds: float) -> None:
        self._requests.of((pool, route, outcome)).value += 1
        self._e2e.of((pool, route)).observe(seconds)

    def track(
        self,
        endpoints: EndpointRegistry,
        queue_depths: Callable[[], Mapping[str, int]],
        buffers: Callable[[], Iterable[BufferReport]],
    ) -> None:
        """Expose live state read at scrape time, so the data path pays nothing for it."""
        self.registry.register(_LiveState(endpoints, queue_depths, buffers, self._per_endpoint))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _LiveState(Collector):
    def __init__(
        self,
        endpoints: EndpointRegistry,
        queue_depths: Callable[[], Mapping[str, int]],
        buffers: Callable[[], Iterable[BufferReport]],
        per_endpoint: bool,
    ) -> None:
        self._endpoints = endpoints
        self._queue_depths = queue_depths
        self._buffers = buffers
        self._per_endpoint = per_endpoint

    def collect(self) -> Iterator[Metric]:
        labels = ["pool", "role", "endpoint"] if self._per_endpoint else ["pool", "role"]
        in_flight = GaugeMetricFamily(
            "tandem_router_endpoint_in_flight",
            "Open requests, per pool and role (per endpoint too in debug mode).",
            labels=labels,
        )
        healthy = GaugeMetricFamily(
            "tandem_router_endpoint_healthy",
            "Endpoints in rotation, per pool and role (1 or 0 per endpoint in debug mode).",
            labels=labels,
        )
        sums: dict[tuple[str, ...], tuple[int, int]] = {}
        for state in self._endpoints:
            key: tuple[str, ...] = (state.pool, state.role.value)
            if self._per_endpoint:
                key += (state.url,)
            open_requests, in_rotation = sums.get(key, (0, 0))
            sums[key] = (open_requests + state.in_flight, in_rotation + (1 if state.healthy else 0))
        for labelled, (open_requests, in_rotation) in sums.items():
            in_flight.add_metric(list(labelled), open_requests)
            healthy.add_metric(list(labelled), in_rotation)
        depth = GaugeMetricFamily(
            "tandem_router_queue_depth", "Requests waiting for admission.", labels=["pool"]
        )
        for pool, waiting in self._queue_depths().items():
            depth.add_metric([pool], waiting)
        buffer_labels = ["pool", "endpoint"] if self._per_endpoint else ["pool"]
        free = GaugeMetricFamily(
            "tandem_router_decoder_pd_buffer_free_chunks",
            "LMCache PD buffer chunks of this replica's share free on the pool's decoders (per TP rank;"
            " per decoder in debug mode).",
            labels=buffer_labels,
        )
        starved = GaugeMetricFamily(
            "tandem_router_decoder_pd_buffer_starved",
            "Decoders whose buffer has been too full for a handoff for longer than the handoff timeout"
            " (1 or 0 per decoder in debug mode).",
            labels=buffer_labels,
        )
        buffer_sums: dict[tuple[str, ...], tuple[int, int]] = {}
        for pool, url, chunks, is_starved in self._buffers():
            key = (pool, url) if self._per_endpoint else (pool,)
            total, count = buffer_sums.get(key, (0, 0))
            buffer_sums[key] = (total + chunks, count + (1 if is_starved else 0))
        for labelled, (total, count) in buffer_sums.items():
            free.add_metric(list(labelled), total)
            starved.add_metric(list(labelled), count)
        yield from (in_flight, healthy, depth, free, starved)
