"""Services and their ready endpoints, as one immutable snapshot for the proxy and the DNS.

``build_catalog`` joins Services (client models) with EndpointSlices (dicts; ``v1`` and
``v1beta1`` read alike: only ``addresses``, ``conditions.ready``, ``hostname`` and ``ports`` are
used). The ``kubernetes`` Service in ``default`` gets the apiserver as its backend: the apiserver
cannot publish its own endpoint here, since Endpoints may not hold a loopback address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tandem.devcluster.env import ServiceLink

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_API_SERVICE = ("default", "kubernetes")


@dataclass(frozen=True)
class ServicePort:
    name: str | None
    port: int
    protocol: str


@dataclass(frozen=True)
class ServiceView:
    """A Service with what its ready endpoints offer."""

    namespace: str
    name: str
    cluster_ip: str | None  # None: headless
    ports: tuple[ServicePort, ...]
    # Per Service port name: the ready (ip, port) backends, in a stable order.
    backends: Mapping[str | None, tuple[tuple[str, int], ...]] = field(default_factory=dict)
    # Ready endpoint addresses with their hostnames (for headless Services' DNS names).
    ready_addresses: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True)
class Catalog:
    services: tuple[ServiceView, ...] = ()

    def links(self, namespace: str, include_namespace: bool) -> list[ServiceLink]:
        """Service-link variables' sources: the API's Service always, ``namespace``'s when asked."""
        return [
            ServiceLink(view.name, view.cluster_ip, tuple((p.name, p.port, p.protocol) for p in view.ports))
            for view in self.services
            if view.cluster_ip is not None
            and (
                (view.namespace, view.name) == _API_SERVICE
                or (include_namespace and view.namespace == namespace)
            )
        ]


def _port_key(name: str | None) -> str | None:
    return name or None


def _slice_backends(
    slices: Iterable[Mapping[str, Any]],
) -> tuple[dict[str | None, list[tuple[str, int]]], list[tuple[str, str | None]]]:
    backends: dict[str | None, list[tuple[str, int]]] = {}
    addresses: list[tuple[str, str | None]] = []
    for endpoint_slice in slices:
        if endpoint_slice.get("addressType", "IPv4") != "IPv4":
            continue
        ready = [
            endpoint
            for endpoint in endpoint_slice.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready") is not False
        ]
        for endpoint in ready:
            for address in endpoint.get("addresses") or []:
                addresses.append((address, endpoint.get("hostname")))
        for port in endpoint_slice.get("ports") or []:
            if port.get("port") is None or port.get("protocol", "TCP") != "TCP":
                continue
            targets = backends.setdefault(_port_key(port.get("name")), [])
            for endpoint in ready:
                targets.extend((address, int(port["port"])) for address in endpoint.get("addresses") or [])
    return backends, addresses


def build_catalog(
    services: Iterable[Any], slices: Iterable[Mapping[str, Any]], apiserver: tuple[str, int]
) -> Catalog:
    """Join Services with their EndpointSlices; ExternalName Services are left out."""
    by_service: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for endpoint_slice in slices:
        metadata = endpoint_slice.get("metadata") or {}
        owner = (metadata.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner:
            by_service.setdefault((metadata.get("namespace", ""), owner), []).append(endpoint_slice)
    views = []
    for service in services:
        spec = service.spec
        if spec.type == "ExternalName" or not spec.cluster_ip:
            continue
        key = (service.metadata.namespace, service.metadata.name)
        ports = tuple(
            ServicePort(_port_key(port.name), int(port.port), port.protocol or "TCP")
            for port in spec.ports or []
        )
        if key == _API_SERVICE:
            backends = {port.name: [apiserver] for port in ports}
            addresses: list[tuple[str, str | None]] = [(apiserver[0], None)]
        else:
            backends, addresses = _slice_backends(by_service.get(key, []))
        views.append(
            ServiceView(
                namespace=key[0],
                name=key[1],
                cluster_ip=None if spec.cluster_ip == "None" else spec.cluster_ip,
                ports=ports,
                backends={name: tuple(sorted(set(found))) for name, found in backends.items()},
                ready_addresses=tuple(sorted(set(addresses), key=lambda item: (item[0], item[1] or ""))),
            )
        )
    views.sort(key=lambda view: (view.namespace, view.name))
    return Catalog(tuple(views))
