"""Cluster DNS through each pod's own ``/etc/hosts``.

A pod's ``/etc/hosts`` is a link to its hosts file (see ``podinit``). The file maps
``<svc>.<ns>.svc.cluster.local``, ``<svc>.<ns>.svc``, ``<svc>.<ns>`` and, within the pod's
namespace, ``<svc>`` to the ClusterIP; a headless Service's names map to its ready endpoints'
addresses (and ``<hostname>.<svc>.<ns>.svc.cluster.local`` for endpoints with a hostname, as
StatefulSet pods have). Files are rewritten by atomic rename whenever the Services change; glibc
reads ``/etc/hosts`` at every lookup, so running programs see the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tandem.devcluster.network import CLUSTER_DOMAIN
from tandem.devcluster.services import Catalog, ServiceView

_HEADER = "# Kubernetes-managed hosts file (tandem devcluster): rewritten as Services change.\n"
_LOCALHOST = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


@dataclass(frozen=True)
class PodHosts:
    """The pod a hosts file belongs to."""

    path: Path
    namespace: str
    pod_ip: str
    hostname: str
    subdomain: str | None = None


def service_names(view: ServiceView, namespace: str) -> list[str]:
    """The names a pod in ``namespace`` resolves for ``view``."""
    qualified = f"{view.name}.{view.namespace}"
    names = [f"{qualified}.svc.{CLUSTER_DOMAIN}", f"{qualified}.svc", qualified]
    if view.namespace == namespace:
        names.append(view.name)
    return names


def render_hosts(catalog: Catalog, pod: PodHosts) -> str:
    """The content of ``pod``'s hosts file."""
    lines = [_HEADER, _LOCALHOST]
    own = [pod.hostname]
    if pod.subdomain:
        own.insert(0, f"{pod.hostname}.{pod.subdomain}.{pod.namespace}.svc.{CLUSTER_DOMAIN}")
    lines.append(f"{pod.pod_ip}\t{' '.join(own)}\n")
    for view in catalog.services:
        names = " ".join(service_names(view, pod.namespace))
        if view.cluster_ip is not None:
            lines.append(f"{view.cluster_ip}\t{names}\n")
            continue
        for address, hostname in view.ready_addresses:
            lines.append(f"{address}\t{names}\n")
            if hostname:
                member = f"{hostname}.{view.name}.{view.namespace}.svc"
                lines.append(f"{address}\t{member}.{CLUSTER_DOMAIN} {member}\n")
    return "".join(lines)


def write_atomically(path: Path, content: str) -> None:
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(content)
    staged.chmod(0o644)
    staged.replace(path)


class HostsFiles:
    """Keeps every running pod's hosts file in step with the Service catalog."""

    def __init__(self) -> None:
        self._catalog = Catalog()
        self._pods: dict[str, PodHosts] = {}
        self._written: dict[str, str] = {}

    def add(self, uid: str, pod: PodHosts) -> None:
        self._pods[uid] = pod
        self._write(uid)

    def remove(self, uid: str) -> None:
        self._pods.pop(uid, None)
        self._written.pop(uid, None)

    def update(self, catalog: Catalog) -> None:
        self._catalog = catalog
        for uid in self._pods:
            self._write(uid)

    def _write(self, uid: str) -> None:
        pod = self._pods[uid]
        content = render_hosts(self._catalog, pod)
        if self._written.get(uid) != content:
            pod.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(pod.path, content)
            self._written[uid] = content
