"""Helpers for the router's integration tests: simulator processes on their own loopback addresses
(so decoders share the pool's LMCache ports, as pods do) and routers running in-process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from prometheus_text import metric_sum
from protocol_facts import LMCACHE_CONSUMER, LMCACHE_PRODUCER, NIXL

from tandem.api.spec import KvConnector
from tandem.devcluster.processes import free_port
from tandem.router.app import RouterApp, create_app
from tandem.router.server import server_config
from tandem.router.settings import RouterSettings, StaticPoolSettings

MODEL = "tandem/sim-model"
HASH_SEED = "1234"  # PYTHONHASHSEED: the same on every engine of a pool, or the decoder never hits
SPEED = "50"
THRESHOLD = 200  # prompt tokens: the static pools' routers hand off longer prompts
LONG_PROMPT = "Summarise this:" + " the quick brown fox jumps over the lazy dog" * 40  # 567 tokens: 3 chunks


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


@dataclass(frozen=True)
class LmcachePorts:
    """A static LMCache pool's ports: its decoders receive KV on ``init`` and ``alloc`` (plus each
    TP rank's rank), its prefillers notify the router on ``notify``."""

    init: int
    alloc: int
    notify: int

    @classmethod
    def free(cls) -> LmcachePorts:
        """Free ports, the receivers' apart enough for two TP ranks each."""
        init, alloc, notify = free_port(), free_port(), free_port()
        while alloc in (init, init + 1) or alloc + 1 == init:
            alloc = free_port()
        return cls(init, alloc, notify)


def _lmcache_file(settings: dict[str, Any]) -> str:
    with tempfile.NamedTemporaryFile("w", prefix="tandem-lmcache-", suffix=".yaml", delete=False) as handle:
        json.dump({"chunk_size": 256, "enable_pd": True, "transfer_channel": "nixl", **settings}, handle)
        return handle.name


def lmcache_decoder(
    host: str, ports: LmcachePorts, *, tp: int = 1, buffer_bytes: int = 2 * 1024**3
) -> tuple[list[str], dict[str, str]]:
    """A decoder listening on `ports.init + rank` and `ports.alloc + rank` of each TP rank."""
    config = _lmcache_file(
        {
            "pd_role": "receiver",
            "pd_peer_host": host,
            "pd_peer_init_port": [ports.init + rank for rank in range(tp)],
            "pd_peer_alloc_port": [ports.alloc + rank for rank in range(tp)],
            "pd_buffer_size": buffer_bytes,
        }
    )
    args = ["--kv-transfer-config", json.dumps(LMCACHE_CONSUMER), "--tensor-parallel-size", str(tp)]
    return args, {"LMCACHE_CONFIG_FILE": config}


def lmcache_prefiller(ports: LmcachePorts) -> tuple[list[str], dict[str, str]]:
    """A prefiller notifying a router on this host's `ports.notify`."""
    config = _lmcache_file(
        {
            "pd_role": "sender",
            "pd_proxy_host": "127.0.0.1",
            "pd_proxy_port": ports.notify,
            "pd_buffer_size": 1024**3,
        }
    )
    return ["--kv-transfer-config", json.dumps(LMCACHE_PRODUCER)], {"LMCACHE_CONFIG_FILE": config}


def nixl_engine(host: str) -> tuple[list[str], dict[str, str]]:
    env = {"VLLM_NIXL_SIDE_CHANNEL_HOST": host, "VLLM_NIXL_SIDE_CHANNEL_PORT": str(free_port(host))}
    return ["--kv-transfer-config", json.dumps(NIXL)], env


def static_router_settings(notify_port: int, pool: Mapping[str, Any], **tuning: Any) -> RouterSettings:
    """A router on a free port in front of a static pool of MODEL (`pool`: its other settings),
    scraping no metrics unless `tuning` (the router's settings) says so."""
    return RouterSettings(
        host="127.0.0.1",
        port=free_port(),
        notify_port=notify_port,
        static=StaticPoolSettings(**{"model": MODEL, **pool}),
        **{"scrape_interval_s": 0, **tuning},
    )


def direct_router_settings(
    decode: str, static: Mapping[str, Any] | None = None, **tuning: Any
) -> RouterSettings:
    """`static_router_settings` for one engine at `decode` and no prefiller: every request direct."""
    return static_router_settings(free_port(), {"decode": (decode,), **(static or {})}, **tuning)


def lmcache_router_settings(
    ports: LmcachePorts,
    decode: Sequence[Engine],
    prefill: Sequence[Engine],
    static: Mapping[str, Any] | None = None,
    **tuning: Any,
) -> RouterSettings:
    """`static_router_settings` for an LMCache pool of `decode` and `prefill` (on `ports`), handing
    off prompts above THRESHOLD; `static` adds to the pool's settings."""
    pool = {
        "decode": tuple(engine.url for engine in decode),
        "prefill": tuple(engine.url for engine in prefill),
        "threshold": THRESHOLD,
        "peer_init_port": ports.init,
        "peer_alloc_port": ports.alloc,
        **(static or {}),
    }
    return static_router_settings(ports.notify, pool, **tuning)


def nixl_router_settings(
    decode: Sequence[Engine], prefill: Sequence[Engine], **tuning: Any
) -> RouterSettings:
    """`static_router_settings` for a NIXL pool of `decode` and `prefill`, handing off prompts above
    THRESHOLD."""
    pool = {
        "decode": tuple(engine.url for engine in decode),
        "prefill": tuple(engine.url for engine in prefill),
        "connector": KvConnector.NIXL,
        "threshold": THRESHOLD,
    }
    return static_router_settings(free_port(), pool, **tuning)


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
async def router_running(settings: RouterSettings, app: RouterApp | None = None) -> AsyncIterator[str]:
    """The router app (`app`, or a new one for `settings`) on a real socket in this event loop,
    served as `tandem router` serves it (the edge limits live in the server); yields its base URL."""
    server = uvicorn.Server(server_config(app or create_app(settings), settings, log_level="warning"))
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


_T = TypeVar("_T")


async def eventually(check: Callable[[], Awaitable[_T | None]], what: str, within_s: float = 90) -> _T:
    """Poll without blocking the event loop the router runs in."""
    deadline = asyncio.get_running_loop().time() + within_s
    while asyncio.get_running_loop().time() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")
