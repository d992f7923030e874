"""Helpers for the router's integration tests: simulator processes on their own loopback addresses
(so decoders share the pool's LMCache ports, as pods do) and routers running in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from prometheus_text import metric_sum
from protocol_facts import LMCACHE_CONSUMER, LMCACHE_PRODUCER, NIXL

from tandem.router.app import create_app
from tandem.router.settings import RouterSettings

MODEL = "tandem/sim-model"
HASH_SEED = "1234"  # PYTHONHASHSEED: the same on every engine of a pool, or the decoder never hits
SPEED = "50"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class Addresses:
    """Loopback addresses of one test module: 127.<random>.<n>.1, unlikely to meet another run's."""

    def __init__(self) -> None:
        self._octet = random.randrange(100, 250)
        self._next = 0

    def take(self) -> str:
        self._next += 1
        return f"127.{self._octet}.{self._next}.1"


@dataclass
class Engine:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    files: list[Path] = field(default_factory=list)  # config files made for it

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        return metric_sum(httpx.get(f"{self.url}/metrics", timeout=5).text, name, **labels)

    def set_faults(self, **faults: Any) -> None:
        httpx.post(f"{self.url}/admin/faults", json=faults, timeout=5).raise_for_status()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_path.unlink(missing_ok=True)
        for path in self.files:
            path.unlink(missing_ok=True)


def _lmcache_file(settings: dict[str, Any]) -> str:
    with tempfile.NamedTemporaryFile("w", prefix="tandem-lmcache-", suffix=".yaml", delete=False) as handle:
        json.dump({"chunk_size": 256, "enable_pd": True, "transfer_channel": "nixl", **settings}, handle)
        return handle.name


def lmcache_decoder(host: str, init_port: int, alloc_port: int) -> tuple[list[str], dict[str, str]]:
    config = _lmcache_file(
        {
            "pd_role": "receiver",
            "pd_peer_host": host,
            "pd_peer_init_port": [init_port],
            "pd_peer_alloc_port": [alloc_port],
            "pd_buffer_size": 2 * 1024**3,
        }
    )
    return ["--kv-transfer-config", json.dumps(LMCACHE_CONSUMER)], {"LMCACHE_CONFIG_FILE": config}


def lmcache_prefiller(proxy_host: str, proxy_port: int) -> tuple[list[str], dict[str, str]]:
    config = _lmcache_file(
        {
            "pd_role": "sender",
            "pd_proxy_host": proxy_host,
            "pd_proxy_port": proxy_port,
            "pd_buffer_size": 1024**3,
        }
    )
    return ["--kv-transfer-config", json.dumps(LMCACHE_PRODUCER)], {"LMCACHE_CONFIG_FILE": config}


def nixl_engine(host: str) -> tuple[list[str], dict[str, str]]:
    env = {"VLLM_NIXL_SIDE_CHANNEL_HOST": host, "VLLM_NIXL_SIDE_CHANNEL_PORT": str(free_port(host))}
    return ["--kv-transfer-config", json.dumps(NIXL)], env


def start_engines(
    specs: list[tuple[str, tuple[list[str], dict[str, str]]]], startup_s: float = 60
) -> list[Engine]:
    """Start simulators (host, (args, env)) at once, return them once all are healthy."""
    engines = []
    for host, (args, env) in specs:
        port = free_port(host)
        with tempfile.NamedTemporaryFile(prefix="tandem-sim-", suffix=".log", delete=False) as log:
            log_path = Path(log.name)
        command = [
            sys.executable,
            "-m",
            "tandem.cli",
            "sim",
            "--host",
            host,
            "--port",
            str(port),
            "--speed",
            SPEED,
            *args,
        ]
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONHASHSEED": HASH_SEED, **env},
            )
        config = env.get("LMCACHE_CONFIG_FILE")
        engines.append(Engine(host, port, process, log_path, [Path(config)] if config else []))
    deadline = time.monotonic() + startup_s
    try:
        for engine in engines:
            while True:
                if engine.process.poll() is not None:
                    raise RuntimeError(f"simulator exited:\n{engine.log()}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{engine.url}/health", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"simulator {engine.url} not healthy:\n{engine.log()}")
                time.sleep(0.05)
    except BaseException:
        for engine in engines:
            engine.stop()
        raise
    return engines


@contextlib.contextmanager
def engines_running(specs: list[tuple[str, tuple[list[str], dict[str, str]]]]) -> Iterator[list[Engine]]:
    engines = start_engines(specs)
    try:
        yield engines
    finally:
        for engine in engines:
            engine.stop()


@contextlib.asynccontextmanager
async def router_running(settings: RouterSettings) -> AsyncIterator[str]:
    """The router app on a real socket in this event loop; yields its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.listen_host(),
            port=settings.port,
            lifespan="on",
            log_level="warning",
            access_log=False,
        )
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise RuntimeError("router did not start")
        yield f"http://{settings.listen_host()}:{settings.port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def router_client(settings: RouterSettings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on a router running in-process."""
    async with router_running(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:
        yield http
