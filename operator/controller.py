"""The operator's shell: the object cache feeds a work queue, whose workers run the reconciler.

Watches (kopf handlers) only record objects in the cache, which queues their pool; a worker runs
``Reconciler.reconcile`` for it (one at a time per pool, retried with backoff when it fails, again
after a delay when it asks). Every pool is queued again each ``resync_seconds``, with API discovery
refreshed: the same level-triggered path serves a new pool, a change, and a look at an idle one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable

import httpx
from opentelemetry.sdk.trace import TracerProvider

from tandem.operator.autoscale.autoscaler import Autoscaler
from tandem.operator.autoscale.sources import sources
from tandem.operator.decide import Planner
from tandem.operator.kinds import served_kinds
from tandem.operator.kube import Body, KubeApi, KubeError
from tandem.operator.metrics import OperatorMetrics
from tandem.operator.object_cache import ObjectCache, PoolKey
from tandem.operator.reconciler import Reconciler
from tandem.operator.settings import OperatorSettings
from tandem.operator.workqueue import WorkQueue

logger = logging.getLogger(__name__)


class Controller:
    def __init__(
        self,
        settings: OperatorSettings,
        planner: Planner,
        api: KubeApi,
        *,
        instance: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics_http: httpx.AsyncClient | None = None,
        spans: TracerProvider | None = None,
    ) -> None:
        """``metrics_http``: the client that reads router pods and Prometheus (default: its own);
        ``spans``: where reconcile spans go (its owner shuts it down), default nowhere."""
        self._settings = settings
        self._api = api
        # Router pods by pod IP and an in-cluster Prometheus: no proxy from the environment.
        self._http = metrics_http or httpx.AsyncClient(trust_env=False)
        self._own_http = metrics_http is None
        self._resync: asyncio.Task[None] | None = None
        self.queue: WorkQueue[PoolKey] = WorkQueue(
            self._process,
            workers=settings.workers,
            base_delay=settings.retry_base_seconds,
            max_delay=settings.retry_max_seconds,
        )
        self.cache = ObjectCache(self.queue)
        self.metrics = OperatorMetrics(statuses=self.cache.statuses, queue_depth=lambda: len(self.queue))
        self.reconciler = Reconciler(
            settings,
            planner,
            api,
            self.cache,
            self.metrics,
            Autoscaler(api, planner, sources(api, self._http), clock=clock),
            instance=instance or socket.gethostname(),
            clock=clock,
            sleep=sleep,
            tracer=None if spans is None else spans.get_tracer("tandem.operator"),
        )

    async def start(self) -> None:
        await self.reconciler.discover()
        await self.cache.prime(self._api, served_kinds(self.reconciler.caps), self._settings.namespaces)
        self.queue.start()
        self._resync = asyncio.create_task(self._resync_loop(), name="resync")

    async def stop(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
            await asyncio.gather(self._resync, return_exceptions=True)
        await self.queue.stop()
        if self._own_http:
            await self._http.aclose()

    async def observe_crd(self, event_type: str | None, body: Body) -> None:
        """Installing or removing a CRD makes no event on the pools that need it: this is that
        event. Every pool is looked at again when it changed what the cluster serves."""
        if await self.reconciler.crd_changed(event_type, body):
            self.cache.queue_pools()

    async def _process(self, key: PoolKey) -> None:
        requeue_after = await self.reconciler.reconcile(
            key, failures=self.queue.failures(key), retry_in=self.queue.retry_delay(key)
        )
        if requeue_after is not None:
            self.queue.add_after(key, requeue_after)

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.resync_seconds)
            try:
                await self.reconciler.discover()
            except KubeError as exc:
                logger.warning("API discovery failed: %s", exc)
            self.cache.queue_pools()
