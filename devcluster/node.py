"""The node side of the devcluster: kubelet, userspace kube-proxy and hosts-file DNS, together.

``node_agent`` watches Services and EndpointSlices (``discovery.k8s.io/v1`` when served, else
``v1beta1``) into a ``Catalog`` that the proxy and the hosts files follow, registers the Node and
runs the kubelet over a watch of all Pods. Leaving it stops every pod process first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from tandem.devcluster.containers import Backoff
from tandem.devcluster.controlplane import ControlPlaneAccess
from tandem.devcluster.dns import HostsFiles
from tandem.devcluster.errors import DevClusterError
from tandem.devcluster.informer import Informer
from tandem.devcluster.kubelet import Kubelet, NodeShape
from tandem.devcluster.network import HOST_IP, NetworkSlot, PodAddresses
from tandem.devcluster.podworker import NodeContext
from tandem.devcluster.proxy import ServiceProxy
from tandem.devcluster.services import Catalog, build_catalog
from tandem.devcluster.settings import NodeSettings
from tandem.devcluster.tasks import background

_SYNC_TIMEOUT = 30.0


def api_client(access: ControlPlaneAccess) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = access.server
    configuration.ssl_ca_cert = str(access.ca_cert)
    configuration.api_key = {"BearerToken": access.token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return client.ApiClient(configuration)


async def endpoint_slice_version(api: client.ApiClient) -> str:
    """``v1`` when the cluster serves discovery.k8s.io/v1, else ``v1beta1``."""
    groups = await client.ApisApi(api).get_api_versions()
    for group in groups.groups:
        if group.name == "discovery.k8s.io":
            served = {version.version for version in group.versions}
            return "v1" if "v1" in served else "v1beta1"
    raise DevClusterError("the apiserver serves no discovery.k8s.io API (EndpointSlices)")


class _CatalogFeed:
    """Watches Services and EndpointSlices; rebuilds the catalog on change and pushes it to the
    hosts files and the proxy."""

    def __init__(
        self,
        services: Callable[..., Awaitable[Any]],
        slices: Callable[..., Awaitable[Any]],
        apiserver: tuple[str, int],
        hosts: HostsFiles,
        proxy: ServiceProxy,
    ) -> None:
        self.catalog = Catalog()
        self._services = Informer("services", services, self._on_event)
        self._slices = Informer("endpointslices", slices, self._on_event)
        self._apiserver = apiserver
        self._hosts = hosts
        self._proxy = proxy
        self._changed = asyncio.Event()

    def _on_event(self, _kind: str, _obj: Any) -> None:
        self._changed.set()

    async def synced(self) -> None:
        """Until both watches have listed, with the catalog built from what they found."""
        await asyncio.gather(self._services.synced.wait(), self._slices.synced.wait())
        await self._publish()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._services.run())
            group.create_task(self._slices.run())
            group.create_task(self._follow())

    async def _follow(self) -> None:
        while True:
            await self._changed.wait()
            await self._publish()

    async def _publish(self) -> None:
        self._changed.clear()
        self.catalog = build_catalog(
            self._services.objects.values(), self._slices.objects.values(), self._apiserver
        )
        # The proxy first: once a name resolves, its ClusterIP already forwards to the same endpoints.
        await self._proxy.apply(self.catalog)
        self._hosts.update(self.catalog)


async def _service_account_ready(core: Any) -> None:
    """Until ``default``'s ServiceAccount has its token Secret: before that, admission rejects pods."""
    async with asyncio.timeout(_SYNC_TIMEOUT):
        while True:
            with contextlib.suppress(client.ApiException):
                account = await core.read_namespaced_service_account("default", "default")
                if account.secrets:
                    return
            await asyncio.sleep(0.2)


@asynccontextmanager
async def node_agent(
    access: ControlPlaneAccess, directory: Path, settings: NodeSettings, slot: NetworkSlot
) -> AsyncIterator[None]:
    """Run the node (kubelet, proxy, DNS) against the control plane; pods' state under ``directory``,
    pod IPs from ``slot``."""
    async with api_client(access) as api, _running_node(api, access, directory, settings, slot):
        yield


@asynccontextmanager
async def _running_node(
    api: client.ApiClient,
    access: ControlPlaneAccess,
    directory: Path,
    settings: NodeSettings,
    slot: NetworkSlot,
) -> AsyncIterator[None]:
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    proxy = ServiceProxy()
    hosts = HostsFiles()
    version = await endpoint_slice_version(api)
    host, port = access.server.removeprefix("https://").rsplit(":", 1)
    feed = _CatalogFeed(
        core.list_service_for_all_namespaces,
        functools.partial(custom.list_cluster_custom_object, "discovery.k8s.io", version, "endpointslices"),
        (host, int(port)),
        hosts,
        proxy,
    )
    memory_dir = Path("/dev/shm") / f"tandem-devcluster-{os.getpid()}"
    node = NodeContext(
        core=core,
        node_name=settings.name,
        host_ip=HOST_IP,
        pods_dir=directory / "pods",
        memory_dir=memory_dir,
        path_env=os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        backoff=Backoff(settings.restart_backoff_initial, settings.restart_backoff_max),
        volume_refresh=settings.volume_refresh_seconds,
        probe_poll=settings.probe_poll_seconds,
        hosts=hosts,
        catalog=lambda: feed.catalog,
    )
    kubelet = Kubelet(NodeShape(settings.name, settings.gpus, settings.labels), node, PodAddresses(slot))
    services = background(feed.run(), name="services")
    pods: list[asyncio.Task[None]] = []
    try:
        async with asyncio.timeout(_SYNC_TIMEOUT):
            await feed.synced()
        await kubelet.register()
        await _service_account_ready(core)
        informer = Informer("pods", core.list_pod_for_all_namespaces, kubelet.on_pod_event)
        pods = [
            background(informer.run(), name="pods"),
            background(kubelet.run(), name="kubelet"),
        ]
        yield
    finally:
        # No new pods first, then every pod's processes, then the Services.
        for task in pods:
            task.cancel()
        await asyncio.gather(*pods, return_exceptions=True)
        await kubelet.stop()
        services.cancel()
        await asyncio.gather(services, return_exceptions=True)
        await proxy.close()
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(memory_dir)
