"""Services joined with their EndpointSlices, and the hosts files cluster DNS is made of."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes_asyncio.client import V1ObjectMeta, V1Service, V1ServicePort, V1ServiceSpec

from tandem.devcluster.dns import HostsFiles, PodHosts, render_hosts
from tandem.devcluster.network import NetworkSlot, PodAddresses
from tandem.devcluster.services import build_catalog

APISERVER = ("127.0.0.1", 6443)


def service(namespace: str, name: str, cluster_ip: str, *ports: tuple[str | None, int]) -> V1Service:
    return V1Service(
        metadata=V1ObjectMeta(namespace=namespace, name=name),
        spec=V1ServiceSpec(
            cluster_ip=cluster_ip,
            ports=[V1ServicePort(name=port_name, port=port, protocol="TCP") for port_name, port in ports],
        ),
    )


def endpoint_slice(
    namespace: str, service_name: str, ports: dict[str, int], *endpoints: Any
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": "IPv4",
        "ports": [{"name": name, "port": port, "protocol": "TCP"} for name, port in ports.items()],
        "endpoints": [
            {"addresses": [address], "conditions": {"ready": ready}, "hostname": hostname}
            for address, ready, hostname in endpoints
        ],
    }


def test_backends_are_the_ready_endpoints_per_port_name() -> None:
    catalog = build_catalog(
        [service("serving", "decode", "127.100.0.20", ("http", 80), ("metrics", 9090))],
        [
            endpoint_slice(
                "serving",
                "decode",
                {"http": 8000, "metrics": 9100},
                ("127.0.1.2", True, None),
                ("127.0.1.3", False, None),
                ("127.0.1.4", None, None),  # no condition reported: ready
            ),
            endpoint_slice("other", "decode", {"http": 1}, ("127.0.9.9", True, None)),
        ],
        APISERVER,
    )
    [view] = catalog.services
    assert view.backends["http"] == (("127.0.1.2", 8000), ("127.0.1.4", 8000))
    assert view.backends["metrics"] == (("127.0.1.2", 9100), ("127.0.1.4", 9100))


def test_kubernetes_service_points_at_the_apiserver() -> None:
    catalog = build_catalog([service("default", "kubernetes", "127.100.0.1", ("https", 443))], [], APISERVER)
    assert catalog.services[0].backends == {"https": (APISERVER,)}
    [link] = catalog.links("serving", include_namespace=True)
    assert (link.name, link.cluster_ip) == ("kubernetes", "127.100.0.1")


def test_links_cover_own_namespace_only_when_enabled() -> None:
    catalog = build_catalog(
        [
            service("default", "kubernetes", "127.100.0.1", ("https", 443)),
            service("serving", "router", "127.100.0.5", ("http", 80)),
            service("elsewhere", "other", "127.100.0.6", ("http", 80)),
        ],
        [],
        APISERVER,
    )
    assert {link.name for link in catalog.links("serving", include_namespace=True)} == {
        "kubernetes",
        "router",
    }
    assert {link.name for link in catalog.links("serving", include_namespace=False)} == {"kubernetes"}


def test_hosts_name_services_and_headless_endpoints() -> None:
    catalog = build_catalog(
        [
            service("serving", "router", "127.100.0.5", ("http", 80)),
            service("serving", "prefill", "None", ("http", 8000)),
            service("elsewhere", "cache", "127.100.0.7", ("redis", 6379)),
        ],
        [
            endpoint_slice(
                "serving",
                "prefill",
                {"http": 8000},
                ("127.0.1.8", True, "prefill-0"),
                ("127.0.1.9", False, None),
            )
        ],
        APISERVER,
    )
    hosts = render_hosts(catalog, PodHosts(Path("/x"), "serving", "127.0.1.3", "router-abc"))
    lines = [line.split() for line in hosts.splitlines() if line and not line.startswith("#")]
    assert ["127.0.0.1", "localhost"] in lines
    assert ["127.0.1.3", "router-abc"] in lines
    assert [
        "127.100.0.5",
        "router.serving.svc.cluster.local",
        "router.serving.svc",
        "router.serving",
        "router",
    ] in lines
    # Another namespace's Service has no short name here.
    assert [
        "127.100.0.7",
        "cache.elsewhere.svc.cluster.local",
        "cache.elsewhere.svc",
        "cache.elsewhere",
    ] in lines
    # Headless: the ready endpoints themselves, plus per-hostname names.
    assert [
        "127.0.1.8",
        "prefill.serving.svc.cluster.local",
        "prefill.serving.svc",
        "prefill.serving",
        "prefill",
    ] in lines
    assert [
        "127.0.1.8",
        "prefill-0.prefill.serving.svc.cluster.local",
        "prefill-0.prefill.serving.svc",
    ] in lines
    assert not any(line[0] == "127.0.1.9" for line in lines)


def test_hosts_files_follow_the_catalog(tmp_path: Path) -> None:
    files = HostsFiles()
    pod = PodHosts(tmp_path / "hosts", "serving", "127.0.1.3", "web")
    files.add("uid-1", pod)
    assert "router" not in pod.path.read_text()
    linked = pod.path.stat().st_ino
    files.update(build_catalog([service("serving", "router", "127.100.0.5", ("http", 80))], [], APISERVER))
    assert "127.100.0.5\trouter.serving.svc.cluster.local" in pod.path.read_text()
    assert pod.path.stat().st_ino != linked  # replaced by rename: readers never see half a file


def test_pod_addresses_are_unique_and_reused_after_release() -> None:
    addresses = PodAddresses(NetworkSlot(3))
    first, second = addresses.allocate(), addresses.allocate()
    assert (first, second) == ("127.3.1.1", "127.3.1.2")
    addresses.release(first)
    assert addresses.allocate() == first
    for _ in range(253):
        assert not addresses.allocate().endswith((".0", ".255"))
