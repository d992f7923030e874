"""The operator's Prometheus metrics and the ``/metrics`` endpoint that serves them.

tandem_operator_reconciles_total{result}        reconciles by result (ok, error)
tandem_operator_reconcile_errors_total{reason}  failed reconciles by cause
tandem_operator_reconcile_duration_seconds      time per reconcile
tandem_operator_api_writes_total{verb,kind}     writes sent to the API server
tandem_operator_pools{condition,status}         pools per condition and status
tandem_operator_queue_depth                     pools waiting for a reconcile
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tandem.api import ConditionType, InferencePoolStatus

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _PoolConditions(Collector):
    def __init__(self, statuses: Callable[[], Iterable[InferencePoolStatus]]) -> None:
        self._statuses = statuses

    def collect(self) -> Iterator[Metric]:
        tally: Tally[tuple[str, str]] = Tally()
        for status in self._statuses():
            for condition in status.conditions:
                tally[condition.type, condition.status] += 1
        family = GaugeMetricFamily(
            "tandem_operator_pools", "Pools per condition and status.", labels=["condition", "status"]
        )
        for kind in ConditionType:
            for value in ("True", "False", "Unknown"):
                family.add_metric([kind.value, value], tally[kind.value, value])
        yield family


class OperatorMetrics:
    def __init__(
        self, statuses: Callable[[], Iterable[InferencePoolStatus]], queue_depth: Callable[[], int]
    ) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "tandem_operator_reconciles", "Reconciles by result.", ["result"], registry=self.registry
        )
        self.errors = Counter(
            "tandem_operator_reconcile_errors",
            "Failed reconciles by cause.",
            ["reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "tandem_operator_reconcile_duration_seconds",
            "Time per reconcile.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.writes = Counter(
            "tandem_operator_api_writes",
            "Writes sent to the API server.",
            ["verb", "kind"],
            registry=self.registry,
        )
        depth = Gauge("tandem_operator_queue_depth", "Pools waiting for a reconcile.", registry=self.registry)
        depth.set_function(lambda: float(queue_depth()))
        self.registry.register(_PoolConditions(statuses))

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve_metrics(metrics: OperatorMetrics, host: str, port: int) -> web.AppRunner:
    """Start ``GET /metrics`` on ``host:port``; the caller cleans the returned runner up."""

    async def handle(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
