"""Drive simulators from tests: in-process over ASGI, or as real processes on loopback ports.

In-process (the app's lifespan runs around the block)::

    async with sim_client(SimSettings(speed=100)) as client:  # an httpx.AsyncClient
        await client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4})

``httpx.ASGITransport`` buffers each response, so a stream arrives whole. To observe chunks,
timing, connection drops or ZMQ handoffs, run a process::

    with sim_process("--speed", "10") as sim:  # python -m tandem.cli sim --host 127.0.0.1 --port …
        httpx.post(f"{sim.url}/v1/completions", json=...)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from tandem.sim.app import create_app
from tandem.sim.ports import free_port as free_port
from tandem.sim.settings import SimSettings


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Starlette]:
    """Run ``app``'s lifespan (engine loop, sockets) around the block."""
    async with app.router.lifespan_context(app):
        yield app


@contextlib.asynccontextmanager
async def sim_client(settings: SimSettings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client (base URL ``http://sim``) wired to a running in-process simulator."""
    async with running(create_app(settings)) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            yield client


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition, e.g. ``metric_value(text, "tandem_sim_kv_hits_total",
    connector="lmcache")``; KeyError when absent."""
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise KeyError(f"{name}{labels} is not in the exposition")


async def eventually(check: Callable[[], Awaitable[bool]], wait_s: float = 15.0) -> None:
    """Poll ``check`` until it holds (every 20 ms); AssertionError after ``wait_s``."""
    deadline = time.monotonic() + wait_s
    while not await check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"the condition did not hold within {wait_s} s")
        await asyncio.sleep(0.02)


@dataclass
class SimProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, wait_s: float = 30.0) -> None:
        """Return once ``GET /health`` answers 200; raise with the process log if it never does."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tandem sim exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"tandem sim on port {self.port} not healthy after {wait_s} s:\n{self.log()}")


@contextlib.contextmanager
def sim_process(
    *args: str, env: Mapping[str, str] | None = None, port: int | None = None, wait_s: float | None = 30.0
) -> Iterator[SimProcess]:
    """``tandem sim`` as a child process on 127.0.0.1, stopped on exit.

    Healthy on entry, unless ``wait_s`` is None: then call :meth:`SimProcess.wait_healthy` (start
    several processes first, then wait for them, to overlap their start-up).
    """
    port = port or free_port()
    command = [sys.executable, "-m", "tandem.cli", "sim", "--host", "127.0.0.1", "--port", str(port), *args]
    with tempfile.NamedTemporaryFile(prefix="tandem-sim-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    sim = SimProcess(process, port, log_path)
    try:
        if wait_s is not None:
            sim.wait_healthy(wait_s)
        yield sim
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log_path.unlink()
