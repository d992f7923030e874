"""Startup, liveness and readiness probes: one check (``httpGet``, ``tcpSocket`` or ``exec``) and the
threshold bookkeeping around it, with Kubernetes' defaults (period 10 s, timeout 1 s, success
threshold 1, failure threshold 3). ``httpGet`` succeeds on a status from 200 to 399, as the
kubelet's does; HTTPS is not verified (nor is it by the kubelet). An ``exec`` probe runs in the
container's namespaces with its environment and ids, as a runtime's exec does.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from tandem.devcluster.launch import ContainerLaunch

_NSENTER = "nsenter"
_SETPRIV = "setpriv"


@dataclass(frozen=True)
class ProbeTiming:
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: Any) -> ProbeTiming:
        """The timing of a V1Probe, Kubernetes' defaults filled in."""
        return cls(
            initial_delay=float(probe.initial_delay_seconds or 0),
            period=float(probe.period_seconds or 10),
            timeout=float(probe.timeout_seconds or 1),
            success_threshold=probe.success_threshold or 1,
            failure_threshold=probe.failure_threshold or 3,
        )

    def polled(self, every: float | None) -> ProbeTiming:
        """This timing probed every ``every`` seconds where its period is longer, failing after as
        many seconds of failures (``failure_threshold`` periods); itself for None."""
        if every is None or every >= self.period:
            return self
        failures = math.ceil(self.failure_threshold * self.period / every)
        return replace(self, period=every, failure_threshold=failures)


class ProbeTracker:
    """Consecutive results -> verdict: True after ``success_threshold`` passes in a row, False after
    ``failure_threshold`` failures in a row, otherwise the previous verdict (None before any)."""

    def __init__(self, timing: ProbeTiming) -> None:
        self._timing = timing
        self._successes = 0
        self._failures = 0
        self.verdict: bool | None = None

    def record(self, passed: bool) -> bool | None:
        if passed:
            self._successes += 1
            self._failures = 0
            if self._successes >= self._timing.success_threshold:
                self.verdict = True
        else:
            self._failures += 1
            self._successes = 0
            if self._failures >= self._timing.failure_threshold:
                self.verdict = False
        return self.verdict


def resolve_port(port: int | str, container_ports: Sequence[Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    if port.isdigit():
        return int(port)
    for declared in container_ports:
        if declared.name == port:
            return int(declared.container_port)
    raise ValueError(f"probe names port {port!r}, which the container does not declare")


async def _http_get(action: Any, pod_ip: str, container_ports: Sequence[Any]) -> bool:
    host = action.host or pod_ip
    port = resolve_port(action.port, container_ports)
    path = action.path or "/"
    tls: ssl.SSLContext | None = None
    if (action.scheme or "HTTP").upper() == "HTTPS":
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(host, port, ssl=tls)
    try:
        headers = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/1.20", "Connection": "close"}
        headers.update({header.name: header.value for header in action.http_headers or []})
        request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(request.encode())
        await writer.drain()
        status_line = (await reader.readline()).decode(errors="replace").split()
        return len(status_line) >= 2 and status_line[1].isdigit() and 200 <= int(status_line[1]) < 400
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _tcp_socket(action: Any, pod_ip: str, container_ports: Sequence[Any]) -> bool:
    _, writer = await asyncio.open_connection(
        action.host or pod_ip, resolve_port(action.port, container_ports)
    )
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def as_container_user(launch: ContainerLaunch) -> list[str]:
    """A command prefix that gives what follows the container's ids (none for a root container)."""
    ids = [f"--reuid={launch.run_as_user}"] if launch.run_as_user is not None else []
    ids += [f"--regid={launch.run_as_group}"] if launch.run_as_group is not None else []
    if not ids:
        return []
    groups = launch.supplemental_groups
    return [_SETPRIV, *ids, f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups", "--"]


async def _exec(command: Sequence[str], pid: int, launch: ContainerLaunch) -> bool:
    # Runs in the container's mount and UTS namespaces, so it sees the container's files.
    process = await asyncio.create_subprocess_exec(
        _NSENTER,
        f"--target={pid}",
        "--mount",
        "--uts",
        "--",
        *as_container_user(launch),
        *command,
        env=launch.env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        return await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def check(
    probe: Any, pod_ip: str, container_ports: Sequence[Any], pid: int, launch: ContainerLaunch
) -> bool:
    """Run ``probe`` (a V1Probe) once; any error or a timeout counts as a failure."""
    timing = ProbeTiming.of(probe)
    try:
        async with asyncio.timeout(timing.timeout):
            if probe.http_get is not None:
                return await _http_get(probe.http_get, pod_ip, container_ports)
            if probe.tcp_socket is not None:
                return await _tcp_socket(probe.tcp_socket, pod_ip, container_ports)
            if probe._exec is not None:
                return await _exec(probe._exec.command or [], pid, launch)
    except (OSError, TimeoutError, ValueError):
        return False
    return False
