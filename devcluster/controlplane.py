"""etcd, kube-apiserver and kube-controller-manager as child processes on free loopback ports.

``control_plane()`` is an async context manager: it writes the PKI, the token file and the admin
kubeconfig into its folder, starts the three programs in order, waits for each to be healthy and,
on leaving (normally, on error or on cancellation), stops every program it started by process
group, newest first.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from tandem.devcluster.assets import Assets
from tandem.devcluster.errors import DevClusterError
from tandem.devcluster.network import CLUSTER_DOMAIN, HOST_IP, NetworkSlot
from tandem.devcluster.pki import ControlPlanePki, write_pki
from tandem.devcluster.processes import free_port, spawn, stop_group, tail

HOST = HOST_IP
_KUBERNETES_NAMES = ("kubernetes", "kubernetes.default", "kubernetes.default.svc")
_STARTUP_TIMEOUT = 90.0
_STOP_GRACE = 10.0
_PORT_ATTEMPTS = 3
# Controllers that need a cloud, real nodes or volumes stay off; Services need no IPAM controller.
# The Endpoints controller is off too: Endpoints may not hold loopback addresses (pod IPs here are
# 127.0.1.x), so it could only retry failing writes. EndpointSlices accept them and carry the data.
_CONTROLLERS = (
    "*,-nodeipam,-nodelifecycle,-attachdetach,-persistentvolume-binder,-cloud-node-lifecycle,-route,-service"
    ",-endpoint"
)


@dataclass(frozen=True)
class ControlPlaneAccess:
    """How clients reach the running control plane."""

    server: str
    token: str
    kubeconfig: Path
    ca_cert: Path


def render_kubeconfig(
    server: str, ca_pem: bytes, token: str, name: str = "tandem-devcluster"
) -> dict[str, Any]:
    """A kubeconfig document for one cluster and one token user."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": "admin"}}],
        "current-context": name,
    }


def etcd_argv(assets: Assets, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client_url = f"http://{HOST}:{client_port}"
    return [
        str(assets.etcd),
        "--data-dir",
        str(data_dir),
        "--listen-client-urls",
        client_url,
        "--advertise-client-urls",
        client_url,
        "--listen-peer-urls",
        f"http://{HOST}:{peer_port}",
        "--log-level",
        "warn",
    ]


def apiserver_argv(
    assets: Assets,
    pki: ControlPlanePki,
    etcd_port: int,
    port: int,
    token_file: Path,
    cert_dir: Path,
    service_cidr: str,
) -> list[str]:
    return [
        str(assets.kube_apiserver),
        "--etcd-servers",
        f"http://{HOST}:{etcd_port}",
        "--bind-address",
        HOST,
        "--advertise-address",
        HOST,
        "--secure-port",
        str(port),
        "--cert-dir",
        str(cert_dir),
        "--tls-cert-file",
        str(pki.serving_cert),
        "--tls-private-key-file",
        str(pki.serving_key),
        "--token-auth-file",
        str(token_file),
        "--service-account-issuer",
        f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
        "--service-account-key-file",
        str(pki.service_account_public_key),
        "--service-account-signing-key-file",
        str(pki.service_account_key),
        "--service-cluster-ip-range",
        service_cidr,
        "--authorization-mode",
        "RBAC",
        "--allow-privileged=true",
        "--profiling=false",
    ]


def controller_manager_argv(assets: Assets, pki: ControlPlanePki, kubeconfig: Path) -> list[str]:
    return [
        str(assets.kube_controller_manager),
        "--kubeconfig",
        str(kubeconfig),
        "--leader-elect=false",
        "--port",
        "0",
        "--secure-port",
        "0",
        "--service-account-private-key-file",
        str(pki.service_account_key),
        "--root-ca-file",
        str(pki.ca_cert),
        "--use-service-account-credentials=false",
        "--controllers",
        _CONTROLLERS,
        "--profiling=false",
    ]


async def _wait_healthy(
    name: str, process: asyncio.subprocess.Process, log: Path, probe: Callable[[], Awaitable[bool]]
) -> None:
    """Poll ``probe`` until it answers True; fail early (with the log's tail) if the process exits."""
    deadline = time.monotonic() + _STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise DevClusterError(f"{name} exited with status {process.returncode}:\n{tail(log)}")
        try:
            if await probe():
                return
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise DevClusterError(f"{name} was not healthy after {_STARTUP_TIMEOUT:.0f}s:\n{tail(log)}")


async def _get_ok(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> bool:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2), **kwargs) as response:
        return response.status == 200


def _port_taken(log: Path, offset: int) -> bool:
    """Whether the log, from ``offset`` on, says a port was taken (between choosing and binding it)."""
    with log.open("rb") as handle:
        handle.seek(offset)
        return b"address already in use" in handle.read()


async def start_healthy(
    stack: AsyncExitStack,
    name: str,
    logs: Path,
    ports: int,
    argv: Callable[[list[int]], list[str]],
    healthy: Callable[[list[int]], Callable[[], Awaitable[bool]]],
) -> list[int]:
    """Start ``name`` on ``ports`` fresh free ports and wait until it is healthy; the ports.

    A free port can be taken by someone else before the program binds it (many clusters share
    this machine), so that failure is retried on other ports.
    """
    log = logs / f"{name}.log"
    attempt = 0
    while True:
        attempt += 1
        chosen = [free_port() for _ in range(ports)]
        offset = log.stat().st_size if log.exists() else 0
        process = await spawn(argv(chosen), log)
        try:
            await _wait_healthy(name, process, log, healthy(chosen))
        except BaseException as exc:
            await stop_group(process, _STOP_GRACE)
            retry = isinstance(exc, DevClusterError) and attempt < _PORT_ATTEMPTS and _port_taken(log, offset)
            if not retry:
                raise
            continue
        _stop_on_exit(stack, process)
        return chosen


def _stop_on_exit(stack: AsyncExitStack, process: asyncio.subprocess.Process) -> None:
    async def stop() -> None:
        await stop_group(process, _STOP_GRACE)

    stack.push_async_callback(stop)


@asynccontextmanager
async def control_plane(
    assets: Assets, directory: Path, slot: NetworkSlot
) -> AsyncIterator[ControlPlaneAccess]:
    """Run etcd, kube-apiserver and kube-controller-manager with their state in ``directory``,
    Services in ``slot``'s range."""
    logs = directory / "logs"
    pki = write_pki(
        directory / "pki",
        ip_addresses=[HOST, slot.kubernetes_service_ip],
        dns_names=["localhost", *_KUBERNETES_NAMES, f"kubernetes.default.svc.{CLUSTER_DOMAIN}"],
    )
    token = secrets.token_urlsafe(32)
    token_file = directory / "tokens.csv"
    token_file.write_text(f"{token},admin,admin,system:masters\n")
    token_file.chmod(0o600)
    tls = ssl.create_default_context(cafile=str(pki.ca_cert))
    authorization = {"Authorization": f"Bearer {token}"}
    etcd_data = directory / "etcd"

    def etcd(ports: list[int]) -> list[str]:
        shutil.rmtree(etcd_data, ignore_errors=True)  # nothing of a failed attempt is kept
        return etcd_argv(assets, etcd_data, *ports)

    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        etcd_port, _ = await start_healthy(
            stack,
            "etcd",
            logs,
            2,
            etcd,
            lambda ports: lambda: _get_ok(session, f"http://{HOST}:{ports[0]}/health"),
        )
        [api_port] = await start_healthy(
            stack,
            "kube-apiserver",
            logs,
            1,
            lambda ports: apiserver_argv(
                assets, pki, etcd_port, ports[0], token_file, directory / "certs", slot.service_cidr
            ),
            lambda ports: (
                lambda: _get_ok(session, f"https://{HOST}:{ports[0]}/readyz", ssl=tls, headers=authorization)
            ),
        )
        server = f"https://{HOST}:{api_port}"
        kubeconfig = directory / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(render_kubeconfig(server, pki.ca_cert.read_bytes(), token)))
        kubeconfig.chmod(0o600)
        controller_manager = controller_manager_argv(assets, pki, kubeconfig)
        _stop_on_exit(stack, await spawn(controller_manager, logs / "kube-controller-manager.log"))
        yield ControlPlaneAccess(server=server, token=token, kubeconfig=kubeconfig, ca_cert=pki.ca_cert)
