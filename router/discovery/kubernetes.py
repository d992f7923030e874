"""Kubernetes discovery: the pools' InferencePools and their Services' EndpointSlices.

RBAC it needs, in its namespace only: get/list/watch on `endpointslices` (discovery.k8s.io) and on
`inferencepools` (tandem.dev).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from tandem.api.resource import GROUP, PLURAL, VERSION
from tandem.router.connectors.registry import CONNECTORS
from tandem.router.discovery import slices
from tandem.router.discovery.sink import DiscoverySink
from tandem.router.discovery.watch import follow
from tandem.router.pool import PoolConfig, pool_config_from_resource
from tandem.router.settings import KubernetesSettings, RouterSettings

log = logging.getLogger(__name__)


async def api_client(settings: KubernetesSettings) -> client.ApiClient:
    configuration = client.Configuration()
    if settings.kubeconfig is None:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        await config.load_kube_config(
            config_file=str(settings.kubeconfig), client_configuration=configuration
        )
    return client.ApiClient(configuration)


async def slice_version(api: client.ApiClient) -> str:
    groups = await client.ApisApi(api).get_api_versions()
    for group in groups.groups:
        if group.name == slices.GROUP:
            return slices.choose_version([v.version for v in group.versions])
    raise LookupError("the API server serves no discovery.k8s.io group")


class SliceTracker:
    """Keeps every watched slice, and reports a Service's endpoints whenever one of its slices changes."""

    def __init__(self, pools: tuple[str, ...], sink: DiscoverySink) -> None:
        self.services = slices.pool_services(pools)
        self._sink = sink
        self._slices: dict[str, dict[str, Any]] = {}  # slice name → object

    def replace(self, items: list[dict[str, Any]]) -> None:
        self._slices = {i["metadata"]["name"]: i for i in items if slices.service_of(i) in self.services}
        for service in self.services:
            self._publish(service)

    def apply(self, kind: str, obj: dict[str, Any]) -> None:
        name, service = obj["metadata"]["name"], slices.service_of(obj)
        previous = self._slices.pop(name, None)
        if kind != "DELETED" and service in self.services:
            self._slices[name] = obj
        for changed in {service, slices.service_of(previous) if previous else None}:
            if changed in self.services:
                self._publish(changed)

    def _publish(self, service: str) -> None:
        ref = self.services[service]
        owned = [s for s in self._slices.values() if slices.service_of(s) == service]
        if ref.role is not None:
            self._sink.set_endpoints(ref.pool, ref.role, slices.engine_endpoints(owned))
        else:
            self._sink.set_peers(ref.pool, slices.notify_peers(owned))


class KubernetesDiscovery:
    def __init__(self, api: client.ApiClient, settings: RouterSettings, sink: DiscoverySink) -> None:
        assert settings.kubernetes is not None
        self._api = api
        self._k8s = settings.kubernetes
        self._settings = settings
        self._sink = sink
        self._synced_pools: set[str] = set()
        self._unheard: frozenset[str] = frozenset()  # pools warned of: no notification port
        self._slices_synced = False

    def _pool_config(self, obj: dict[str, Any]) -> PoolConfig | None:
        try:
            return pool_config_from_resource(
                obj,
                default_threshold=self._settings.default_threshold,
                prefill_saturation=self._settings.prefill_saturation,
            )
        except ValidationError as exc:
            log.error(
                "InferencePool %s is invalid; keeping its last settings: %s", obj["metadata"]["name"], exc
            )
            return None

    def _on_pools(self, items: list[dict[str, Any]]) -> None:
        for obj in items:
            self._on_pool("ADDED", obj)

    def _on_pool(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if name not in self._k8s.pools:
            return
        if kind == "DELETED":
            self._sink.drop_pool(name)
            return
        pool = self._pool_config(obj)
        if pool is not None:
            self._check_notifications(pool)
            self._sink.set_pool(pool)
            self._synced_pools.add(name)
            self._maybe_synced()

    def _check_notifications(self, pool: PoolConfig) -> None:
        """Warn, once per pool, where its connector notifies and this router opened no port."""
        unheard = CONNECTORS[pool.connector].notifies and self._settings.notify_listen_port() is None
        if unheard and pool.name not in self._unheard:
            log.warning(
                "InferencePool %s: its %s prefillers notify the router, but this router has no "
                "--notify-port (the operator gives it to the routers of such pools), so its handoffs "
                "wait out their timeout",
                pool.name,
                pool.connector.value,
            )
        self._unheard = self._unheard | {pool.name} if unheard else self._unheard - {pool.name}

    def _maybe_synced(self) -> None:
        if self._slices_synced:
            for pool in self._synced_pools:
                self._sink.mark_synced(pool)

    def _list_call(self, **fixed: Any) -> Callable[..., Any]:
        """A list call on any namespaced resource, answering plain dicts (EndpointSlices too: the
        dicts are the same for v1 and v1beta1)."""
        objects = client.CustomObjectsApi(self._api)

        def call(**kwargs: Any) -> Any:
            return objects.list_namespaced_custom_object(namespace=self._k8s.namespace, **fixed, **kwargs)

        return call

    async def _slice_version(self) -> str:
        """The EndpointSlice version to read; waits for an API server that answers."""
        while True:
            try:
                return await slice_version(self._api)
            except (ApiException, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("cannot read the API server's groups yet (%r); retrying", exc)
                await asyncio.sleep(2.0)

    async def run(self) -> None:
        version = await self._slice_version()
        log.info("reading EndpointSlices as %s/%s", slices.GROUP, version)
        tracker = SliceTracker(self._k8s.pools, self._sink)

        def on_slices(items: list[dict[str, Any]]) -> None:
            tracker.replace(items)
            self._slices_synced = True
            self._maybe_synced()

        slice_list = self._list_call(
            group=slices.GROUP,
            version=version,
            plural="endpointslices",
            label_selector=slices.label_selector(tracker.services),
        )
        async with asyncio.TaskGroup() as group:
            group.create_task(follow("EndpointSlice", slice_list, on_slices, tracker.apply))
            for pool in self._k8s.pools:
                pool_list = self._list_call(
                    group=GROUP, version=VERSION, plural=PLURAL, field_selector=f"metadata.name={pool}"
                )
                group.create_task(follow(f"InferencePool {pool}", pool_list, self._on_pools, self._on_pool))
