"""EndpointSlices as the router reads them: pure functions over the API server's JSON.

A slice belongs to the Service named by its `kubernetes.io/service-name` label, and the Service's
name alone gives the role: `<pool>-prefill`, `<pool>-decode`, and `<pool>-kv-notify` (the router
replicas' notification port), matched exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tandem.router.decision import Role
from tandem.router.endpoints import EndpointAddress

SERVICE_LABEL = "kubernetes.io/service-name"
GROUP = "discovery.k8s.io"
PREFERRED_VERSIONS = ("v1", "v1beta1")  # v1beta1: clusters before 1.21 (the test cluster is 1.20)
ENGINE_PORT = "http"
NOTIFY_PORT = "kv-notify"


class ServiceKind(StrEnum):
    PREFILL = "prefill"
    DECODE = "decode"
    NOTIFY = "kv-notify"


@dataclass(frozen=True, slots=True)
class ServiceRef:
    pool: str
    kind: ServiceKind

    @property
    def role(self) -> Role | None:
        return {ServiceKind.PREFILL: Role.PREFILL, ServiceKind.DECODE: Role.DECODE}.get(self.kind)


def pool_services(pools: Iterable[str]) -> dict[str, ServiceRef]:
    """Service name → (pool, kind), for exact lookups."""
    return {f"{pool}-{kind.value}": ServiceRef(pool, kind) for pool in pools for kind in ServiceKind}


def label_selector(services: Iterable[str]) -> str:
    return f"{SERVICE_LABEL} in ({','.join(sorted(services))})"


def choose_version(served: Sequence[str]) -> str:
    for version in PREFERRED_VERSIONS:
        if version in served:
            return version
    raise LookupError(f"the API server serves no EndpointSlice version Tandem reads ({', '.join(served)})")


def service_of(obj: Mapping[str, Any]) -> str | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    name = labels.get(SERVICE_LABEL)
    return name if isinstance(name, str) else None


def _port(obj: Mapping[str, Any], name: str) -> int | None:
    ports = [p for p in obj.get("ports") or [] if isinstance(p, dict) and isinstance(p.get("port"), int)]
    named = [p["port"] for p in ports if p.get("name") == name]
    if named:
        return int(named[0])
    return int(ports[0]["port"]) if len(ports) == 1 and not ports[0].get("name") else None


def _eligible(endpoint: Mapping[str, Any]) -> bool:
    """Ready and not terminating. An absent `ready` means unknown, which the API says to treat as ready."""
    conditions = endpoint.get("conditions") or {}
    return conditions.get("ready") is not False and conditions.get("terminating") is not True


def ready_addresses(
    obj: Mapping[str, Any], port_name: str, *, only_ready: bool = True
) -> list[tuple[str, int, str | None]]:
    """(ip, port, pod name) of the slice's endpoints on the named port: the ready, non-terminating
    ones, or all of them."""
    port = _port(obj, port_name)
    if port is None:
        return []
    found = []
    for endpoint in obj.get("endpoints") or []:
        addresses = endpoint.get("addresses") or []
        if addresses and (_eligible(endpoint) or not only_ready):
            target = endpoint.get("targetRef") or {}
            found.append((str(addresses[0]), port, target.get("name")))
    return found


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def engine_endpoints(slices: Iterable[Mapping[str, Any]]) -> list[EndpointAddress]:
    """The engines of a Service, from all of its slices."""
    seen: dict[str, EndpointAddress] = {}
    for obj in slices:
        for ip, port, name in ready_addresses(obj, ENGINE_PORT):
            url = f"http://{_host(ip)}:{port}"
            seen[url] = EndpointAddress(url, name)
    return list(seen.values())


def notify_peers(slices: Iterable[Mapping[str, Any]]) -> set[str]:
    """The `ip:port` notify addresses of a router Service's replicas. Not-ready and terminating
    ones count: a draining replica still owns handoffs in flight."""
    return {
        f"{_host(ip)}:{port}"
        for obj in slices
        for ip, port, _ in ready_addresses(obj, NOTIFY_PORT, only_ready=False)
    }
