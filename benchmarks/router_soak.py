"""Soak: thousands of requests through `tandem router` while its engines fail in every way the
simulator can fail them; no request the router accepted may be lost. Prints the figures.

Topology, all real processes on loopback addresses: `tandem router` in static mode in front of
`tandem sim` engines, one prefiller and two decoders, each decoder on its own address with the
pool's LMCache ports, as pods are. An LMCache run and a NIXL run (`--connector`). The engines get the
KV configuration the operator renders (`operator/build/connectors/`, decoders without prefix caching),
with `pd_allocation_timeout_sec` equal to the router's handoff timeout as there.

Traffic: open-loop Poisson arrivals; completions and chat, streamed and whole, short prompts (served
by a decoder alone) and long ones (handed off), a third of the long ones behind one shared system
prompt; some clients leave in the middle of a stream, some read slowly.

Faults, one after another over the run (fractions of the duration; `FAULTS` below): a decoder
answering 500s, a decoder hung (its /health still 200) and then released, streams closed after a
few chunks, a prefiller dropping half its notifications, bad messages on the notification port
(malformed, then 16 MiB), a decoder trickling its chunks, a decoder's PD buffer exhausted
(`pd_buffer_held_chunks`), a decoder exiting in the middle of a stream and restarted, a prefiller
answering 500s.

Every request is judged by what its client got:

- *completed*: a whole answer (200, JSON with its choices and a usage of as many tokens as asked),
  or a stream of 200 that ended with `data: [DONE]` after as many tokens as asked, no error event;
- *failed explicitly*: an error status with an OpenAI-style error body, or a stream with an error
  event (by `error.code`);
- *left*: the client hung up on purpose;
- *lost*: accepted (the router answered a status) but neither of the above: a stream that ended
  without [DONE] or an error, an answer shorter than asked without saying why, a body that is not
  an answer, or nothing more before the client's deadline. Must be 0.
- *refused*: no answer at all (no connection, no status): must be 0 too.

After the traffic, every decoder's PD buffer must be free again (`GET /admin/pd_buffer`; the
router's drains run in the background, so it is polled with a deadline): a chunk left is a leak.
Exit status 1 on any loss, refusal or leak.

    .venv/bin/python benchmarks/router_soak.py                  # 2,000 streams a run, LMCache then NIXL
    .venv/bin/python benchmarks/router_soak.py --quick          # about 40 s: 300 streams, LMCache
    .venv/bin/python benchmarks/router_soak.py --json out.json  # the figures, machine-readable

tests/router/test_soak.py runs `--quick` (CI's slow tests), so "lost = 0" holds for good.

Last full run, `.venv/bin/python benchmarks/router_soak.py` (development machine, 2 cores shared
by the router, three simulators and the client; each fault held about 19 s, 10 s for each junk
kind):

    Soak, lmcache: 2000 requests in 231.1 s through `tandem router` (static), 1 prefiller + 2 decoders
      accepted 2000: completed 1887, failed explicitly 6, left by the client 107, LOST 0; refused 0
      explicit failures by code: {'engine_broke': 6}
      routes (200s): {'pd': 931, 'direct': 1069}
      router RSS: 60.3 MiB at the start, peak 65.6 MiB
      completed, TTFT p50 18.1 ms, p99 2037.6 ms; end to end p50 45.1 ms, p99 2068.1 ms
      faults injected (engine counters): {'error': 67.0, 'hang': 16.0, 'close': 10.0,
        'drop_notifications': 132.0, 'junk_notification': 215.0, 'trickle': 44.0};
        engines restarted: {'decode-2': 1}
      router: retries_error 9, retries_timeout 4, retries_broke 2, retries_handoff 48, drains_drained 8,
        drains_read 5, drains_unnotified 44, drains_abandoned 28, drains_failed 1,
        kv_notifications_own 942, kv_notifications_invalid 42, kv_notify_disconnects 45
      decoders' PD buffers after: both 64 of 64 chunks free
    Soak, nixl: 2000 requests in 231.1 s through `tandem router` (static), 1 prefiller + 2 decoders
      accepted 2000: completed 1884, failed explicitly 7, left by the client 109, LOST 0; refused 0
      explicit failures by code: {'engine_broke': 5, 'no_decode_endpoint': 2}
      routes (200s): {'pd': 988, 'direct': 1010}
      router RSS: 60.4 MiB at the start, peak 61.5 MiB
      completed, TTFT p50 19.4 ms, p99 118.9 ms; end to end p50 45.2 ms, p99 418.6 ms

The LMCache p99 is the handoff timeout (2 s here): handoffs whose notification was dropped, or
whose decoder had no buffer room, served locally after it. `engine_broke`: streams a decoder closed
or exited in the middle of (after their first bytes, so not retried); `no_decode_endpoint`: 503s
while both decoders were out of rotation (one hung or restarting, the other ejected).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families

from tandem.api import KvConnector
from tandem.api.spec import LmcacheOptions
from tandem.devcluster.processes import free_port
from tandem.load.sse import SseDecoder
from tandem.operator.build.connectors import KV_PROFILES
from tandem.operator.build.connectors.lmcache import lmcache_config
from tandem.operator.naming import PoolRef, Role
from tandem.sim.testing import metric_value

MODEL = "tandem/sim-model"
SPEED = 10.0  # simulated time runs this much faster; router timeouts are wall-clock
HASH_SEED = "4242"
THRESHOLD = 256  # prompt tokens from which a request is handed off
CHUNK = 256
BUFFER_CHUNKS = 64  # 2 GiB at the simulator's 32 MiB a chunk (Llama-3.1-8B's KV)
# The router's timeouts, shortened from the defaults so that a fault costs seconds, not minutes.
# A simulated request takes milliseconds (prefill, first token): these leave a wide margin.
ROUTER_TIMEOUTS = {
    "--connect-timeout": 1.0,
    "--first-byte-timeout": 2.0,
    "--idle-timeout": 2.0,
    "--prefill-timeout": 2.0,
    "--handoff-timeout": 2.0,
    "--handoff-drain-timeout": 10.0,
    "--probe-interval": 0.5,
    "--max-ejection": 5.0,
}
HANDOFF_TIMEOUT_S = ROUTER_TIMEOUTS["--handoff-timeout"]
DEADLINE_S = 90.0  # a client still waiting this long has lost its request
SETTLE_S = 60.0  # after the traffic, for the router's drains to empty the decoders' buffers
# fmt: off
WORDS = (
    "time", "year", "people", "way", "day", "man", "thing", "woman", "life", "child", "world", "school",
    "state", "family", "student", "group", "country", "problem", "hand", "part", "place", "case",
    "week", "company", "system", "program", "question", "work", "government", "number", "night",
    "point", "home", "water", "room", "mother", "area", "money", "story", "fact", "month", "lot",
    "right", "study", "book", "eye", "job", "word", "business", "issue", "side", "kind", "head",
    "house", "service", "friend", "father", "power", "hour", "game", "line",
)
# fmt: on


# --- Faults ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    start: float  # fraction of the run
    end: float
    engine: str  # "prefill", "decode-1", "decode-2"
    faults: dict[str, Any]
    connectors: tuple[str, ...] = ("lmcache", "nixl")


FAULTS = (
    Fault(0.06, 0.14, "decode-1", {"error_rate": 0.5}),
    Fault(0.14, 0.22, "decode-2", {"hang": True}),  # then released
    Fault(0.22, 0.30, "decode-1", {"close_after_chunks": 3}),
    Fault(0.30, 0.38, "prefill", {"drop_notification_rate": 0.5}, ("lmcache",)),
    Fault(0.38, 0.42, "prefill", {"junk_notification": "malformed"}, ("lmcache",)),
    Fault(0.42, 0.46, "prefill", {"junk_notification": "oversized"}, ("lmcache",)),
    Fault(0.46, 0.54, "decode-2", {"trickle_ms": 100}),
    Fault(0.54, 0.64, "decode-1", {"pd_buffer_held_chunks": BUFFER_CHUNKS}, ("lmcache",)),
    Fault(0.64, 0.72, "decode-2", {"exit_after_chunks": 10}),  # restarted when it exits
    Fault(0.72, 0.80, "prefill", {"error_rate": 0.3}),
)


# --- Processes ------------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    url: str
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
            )

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def wait_ready(self, path: str, deadline_s: float = 60.0) -> None:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.exited():
                raise RuntimeError(
                    f"{self.name} exited:\n{self.log_path.read_text(errors='replace')[-3000:]}"
                )
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready at {self.url}{path}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def memory_mib(self, field: str) -> float:
        """`VmRSS` (resident now) or `VmHWM` (the peak so far) of the process (Linux)."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no {field} in /proc/{self.process.pid}/status")


def lmcache_file(work: Path, name: str, config: dict[str, Any]) -> str:
    path = work / f"{name}-lmcache.yaml"
    path.write_text(json.dumps(config))
    return str(path)


@dataclass
class Topology:
    connector: str
    router: Process
    engines: dict[str, Process]
    decoders: tuple[str, ...] = ("decode-1", "decode-2")

    def all(self) -> list[Process]:
        return [*self.engines.values(), self.router]


def build_topology(connector: str, work: Path) -> Topology:
    octet = random.randrange(100, 250)
    hosts = {name: f"127.{octet}.{n}.1" for n, name in enumerate(("prefill", "decode-1", "decode-2"), 1)}
    ports = {name: free_port(host) for name, host in hosts.items()}
    init_port, alloc_port, notify_port = free_port(), free_port(), free_port()
    ref = PoolRef(name="soak", namespace="bench", uid="soak")
    options = LmcacheOptions(peer_init_port=init_port, peer_alloc_port=alloc_port, proxy_port=notify_port)
    engines = {}
    for name, host in hosts.items():
        role = Role.PREFILL if name == "prefill" else Role.DECODE
        args = ["--model", MODEL, "--host", host, "--port", str(ports[name]), "--speed", str(SPEED)]
        env = {"PYTHONHASHSEED": HASH_SEED}
        transfer = KV_PROFILES[KvConnector(connector)].transfer_config(role)
        args += ["--kv-transfer-config", json.dumps(transfer)]
        if connector == "lmcache":
            config = lmcache_config(ref, role, options, 1)  # what the operator renders
            if role is Role.PREFILL:
                config["pd_proxy_host"] = "127.0.0.1"
            else:
                config["pd_peer_host"] = host
                # The operator's relation, in the simulator's time: wait no longer than the router.
                config["pd_allocation_timeout_sec"] = HANDOFF_TIMEOUT_S * SPEED
            env["LMCACHE_CONFIG_FILE"] = lmcache_file(work, name, config)
        else:
            env.update(VLLM_NIXL_SIDE_CHANNEL_HOST=host, VLLM_NIXL_SIDE_CHANNEL_PORT=str(free_port(host)))
        if role is Role.DECODE and connector == "lmcache":
            args.append("--no-enable-prefix-caching")  # as the operator renders LMCache decoders
        command = [sys.executable, "-m", "tandem.cli", "sim", *args]
        engines[name] = Process(name, command, env, work / f"{name}.log", f"http://{host}:{ports[name]}")
    router_port = free_port()
    router_args = [
        "--host", "127.0.0.1", "--port", str(router_port), "--notify-port", str(notify_port),
        "--static-prefill", engines["prefill"].url,
        "--static-decode", engines["decode-1"].url, "--static-decode", engines["decode-2"].url,
        "--served-model", MODEL, "--connector", connector, "--mode", "Auto", "--threshold", str(THRESHOLD),
        "--peer-init-port", str(init_port), "--peer-alloc-port", str(alloc_port),
        "--decoder-buffer-chunks", str(BUFFER_CHUNKS), "--scrape-interval", "1",
        "--log-level", "warning",
    ]  # fmt: skip
    for flag, value in ROUTER_TIMEOUTS.items():
        router_args += [flag, str(value)]
    router = Process(
        "router",
        [sys.executable, "-m", "tandem.cli", "router", *router_args],
        {},
        work / "router.log",
        f"http://127.0.0.1:{router_port}",
    )
    return Topology(connector, router, engines)


@contextlib.contextmanager
def running(topology: Topology) -> Iterator[Topology]:
    try:
        for engine in topology.engines.values():
            engine.start()
        for engine in topology.engines.values():
            engine.wait_ready("/health")
        topology.router.start()
        topology.router.wait_ready("/ready")
        yield topology
    finally:
        for process in reversed(topology.all()):
            process.stop()


# --- Requests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One request as its client will send and read it."""

    kind: str  # "completion" | "chat"
    stream: bool
    prompt: str
    max_tokens: int
    long: bool
    leave_after: int | None  # the client hangs up after this many events
    slow_reader: bool


def draw_shape(rng: random.Random, system_prompt: str) -> Shape:
    long = rng.random() < 0.5
    words = rng.randint(260, 650) if long else rng.randint(8, 60)
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    if long and rng.random() < 1 / 3:
        text = f"{system_prompt}\n{text}"  # a shared prefix: the prefillers' cache reuses it
    stream = rng.random() < 0.7
    leave_after = rng.randint(1, 6) if stream and rng.random() < 0.08 else None
    return Shape(
        kind="chat" if rng.random() < 0.4 else "completion",
        stream=stream,
        prompt=text,
        max_tokens=rng.randint(8, 64),
        long=long,
        leave_after=leave_after,
        slow_reader=stream and leave_after is None and rng.random() < 0.05,
    )


def request_body(shape: Shape) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": shape.max_tokens, "stream": shape.stream}
    if shape.stream:
        body["stream_options"] = {"include_usage": True}
    if shape.kind == "chat":
        body["messages"] = [{"role": "user", "content": shape.prompt}]
        return "/v1/chat/completions", body
    body["prompt"] = shape.prompt
    return "/v1/completions", body


@dataclass
class Outcome:
    verdict: str  # completed | failed | left | lost | refused
    status: int | None = None
    route: str | None = None
    code: str | None = None  # the error's code, or why it was lost
    ttft_s: float | None = None
    e2e_s: float | None = None


def error_code(payload: Any) -> str | None:
    """The code of an OpenAI-style error body (`{"error": {"message": ..., "code": ...}}`)."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    return str(error.get("code") or error.get("type") or "error")


def judge_whole(shape: Shape, status: int, body: bytes) -> tuple[str, str | None]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "lost", "a body that is not JSON"
    if status != 200:
        code = error_code(payload)
        return ("failed", code) if code is not None else ("lost", f"status {status} without an error body")
    if error_code(payload) is not None:
        return "failed", error_code(payload)
    choices, usage = payload.get("choices"), payload.get("usage")
    if not choices or not isinstance(usage, dict) or choices[0].get("finish_reason") is None:
        return "lost", "an answer without choices, finish_reason or usage"
    if usage.get("completion_tokens") != shape.max_tokens and choices[0]["finish_reason"] == "length":
        return "lost", f"{usage.get('completion_tokens')} of {shape.max_tokens} tokens, cut as 'length'"
    return "completed", None


class StreamJudge:
    """Folds a stream's events; the verdict once it ends."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.events = 0
        self.done = False
        self.error: str | None = None
        self.tokens: int | None = None
        self.garbled = False

    def take(self, data: str) -> None:
        if data == "[DONE]":
            self.done = True
            return
        self.events += 1
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            self.garbled = True
            return
        code = error_code(chunk)
        if code is not None:
            self.error = self.error or code
        usage = chunk.get("usage") if isinstance(chunk, dict) else None
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.tokens = usage["completion_tokens"]

    def verdict(self) -> tuple[str, str | None]:
        if self.error is not None:
            return "failed", self.error
        if self.garbled:
            return "lost", "an event that is not JSON"
        if not self.done:
            return "lost", "a stream that ended without [DONE] or an error event"
        if self.tokens != self.shape.max_tokens:
            return "lost", f"[DONE] after {self.tokens} of {self.shape.max_tokens} tokens"
        return "completed", None


async def send(session: aiohttp.ClientSession, base: str, shape: Shape) -> Outcome:
    path, body = request_body(shape)
    started = time.monotonic()
    outcome = Outcome("refused")
    try:
        async with asyncio.timeout(DEADLINE_S), session.post(base + path, json=body) as response:
            outcome.status, outcome.route = response.status, response.headers.get("x-tandem-route")
            outcome.verdict, outcome.code = "lost", "no end before the deadline"
            if not shape.stream or response.status != 200:
                outcome.verdict, outcome.code = judge_whole(shape, response.status, await response.read())
            else:
                judge = StreamJudge(shape)
                decoder = SseDecoder()
                async for chunk in response.content.iter_any():
                    for data in decoder.feed(chunk):
                        if outcome.ttft_s is None and data != "[DONE]":
                            outcome.ttft_s = time.monotonic() - started
                        judge.take(data)
                    if shape.leave_after is not None and judge.events >= shape.leave_after:
                        outcome.verdict, outcome.code = "left", None
                        return outcome  # leaving the block closes the connection mid-stream
                    if shape.slow_reader:
                        await asyncio.sleep(0.05)
                last = decoder.close()
                if last is not None:
                    judge.take(last)
                outcome.verdict, outcome.code = judge.verdict()
    except TimeoutError:
        pass  # "lost" once a status came, else "refused"
    except aiohttp.ClientError as exc:
        if outcome.status is not None:
            outcome.verdict, outcome.code = "lost", f"the connection broke: {type(exc).__name__}"
    if outcome.verdict == "completed":
        outcome.e2e_s = time.monotonic() - started
        if not shape.stream:
            outcome.ttft_s = outcome.e2e_s
    return outcome


# --- The run --------------------------------------------------------------------------------------


async def restart_exited(topology: Topology, stop: asyncio.Event) -> None:
    """Start again an engine a fault made exit (as its Deployment would), until `stop`."""
    while not stop.is_set():
        for engine in topology.engines.values():
            if engine.exited():
                engine.restarts += 1
                engine.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def apply_faults(topology: Topology, duration_s: float, log: list[str], injected: Counter[str]) -> None:
    """Set and clear each fault at its time. `log` records what was done; `injected`, what each
    fault did (the engine's `tandem_sim_faults_injected_total`, read before the fault is cleared:
    an engine that exits loses its counters)."""
    schedule: list[tuple[float, str, dict[str, Any]]] = []
    for fault in FAULTS:
        if topology.connector in fault.connectors:
            schedule += [(fault.start, fault.engine, fault.faults), (fault.end, fault.engine, {})]
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=5) as http:
        for at, engine, faults in sorted(schedule, key=lambda item: item[0]):
            await asyncio.sleep(max(0.0, started + at * duration_s - time.monotonic()))
            url = topology.engines[engine].url
            for _ in range(100):  # an engine restarting after an exit fault takes a moment
                try:
                    if not faults:
                        injected.update(sim_faults((await http.get(f"{url}/metrics")).text))
                    (await http.post(f"{url}/admin/faults", json=faults)).raise_for_status()
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
            what = json.dumps(faults) if faults else "cleared"
            log.append(f"{time.monotonic() - started:6.1f} s {engine}: {what}")


@dataclass
class Run:
    outcomes: list[Outcome]
    faults_applied: list[str]
    faults_injected: Counter[str]


async def drive(topology: Topology, streams: int, duration_s: float, seed: int) -> Run:
    rng = random.Random(seed)
    system_prompt = " ".join(rng.choice(WORDS) for _ in range(240))
    shapes = [draw_shape(rng, system_prompt) for _ in range(streams)]
    gaps = [rng.expovariate(streams / duration_s) for _ in range(streams)]
    stop, applied, injected = asyncio.Event(), [], Counter[str]()
    supervising = asyncio.create_task(restart_exited(topology, stop))
    faulting = asyncio.create_task(apply_faults(topology, duration_s, applied, injected))
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        for shape, gap in zip(shapes, gaps, strict=True):
            await asyncio.sleep(gap)
            tasks.append(asyncio.create_task(send(session, topology.router.url, shape)))
        outcomes = await asyncio.gather(*tasks)
    await faulting
    stop.set()
    await supervising
    return Run(list(outcomes), applied, injected)


async def settled_buffers(topology: Topology) -> dict[str, dict[str, Any]]:
    """Each decoder's PD buffer once free again, or as it stands at the deadline."""
    states: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + SETTLE_S
    async with httpx.AsyncClient(timeout=5) as http:
        for name in topology.decoders:
            url = topology.engines[name].url
            while True:
                ranks = (await http.get(f"{url}/admin/pd_buffer")).json()["ranks"]
                states[name] = {key: sum(rank[key] for rank in ranks) for key in BUFFER_FIELDS}
                free = states[name]["free"] == states[name]["capacity"] and not states[name]["reserved"]
                if free or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
    return states


BUFFER_FIELDS = ("capacity", "free", "reserved", "waiting_allocations", "writing", "ready", "fault_held")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def router_figures(text: str) -> dict[str, float]:
    def total(name: str, **labels: str) -> float:
        try:
            return metric_value(text, name, **labels)
        except KeyError:
            return 0.0

    figures = {
        f"retries_{s}": total("tandem_router_retries_total", pool="static", stage=s)
        for s in ("error", "timeout", "broke", "connect", "prefill", "handoff")
    }
    figures |= {
        f"drains_{o}": total("tandem_router_handoff_drains_total", pool="static", outcome=o)
        for o in ("drained", "read", "unnotified", "abandoned", "failed")
    }
    figures |= {
        f"kv_notifications_{d}": total("tandem_router_kv_notifications_total", disposition=d)
        for d in ("own", "invalid", "unknown_owner")
    }
    figures["kv_notify_disconnects"] = total("tandem_router_kv_notify_disconnects_total")
    return figures


def sim_faults(text: str) -> dict[str, float]:
    """An engine's `tandem_sim_faults_injected_total`, by fault."""
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        if family.name == "tandem_sim_faults_injected":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["fault"]] += sample.value
    return dict(counts)


async def soak(connector: str, streams: int, duration_s: float, seed: int, work: Path) -> dict[str, Any]:
    topology = build_topology(connector, work)
    with running(topology):
        rss_start = topology.router.memory_mib("VmRSS")
        began = time.monotonic()
        run = await drive(topology, streams, duration_s, seed)
        outcomes = run.outcomes
        elapsed = time.monotonic() - began
        buffers = await settled_buffers(topology) if connector == "lmcache" else {}
        async with httpx.AsyncClient(timeout=5) as http:
            router = router_figures((await http.get(f"{topology.router.url}/metrics")).text)
        peak = topology.router.memory_mib("VmHWM")
        restarts = {name: e.restarts for name, e in topology.engines.items() if e.restarts}
    verdicts = Counter(o.verdict for o in outcomes)
    completed = [o for o in outcomes if o.verdict == "completed"]
    ttft = [o.ttft_s for o in completed if o.ttft_s is not None]
    e2e = [o.e2e_s for o in completed if o.e2e_s is not None]
    leaks = {name: s for name, s in buffers.items() if s["free"] != s["capacity"] or s["reserved"]}
    return {
        "connector": connector,
        "streams": streams,
        "seconds": round(elapsed, 1),
        "accepted": sum(o.status is not None for o in outcomes),
        "completed": verdicts["completed"],
        "failed_explicitly": verdicts["failed"],
        "left_by_client": verdicts["left"],
        "lost": verdicts["lost"],
        "refused": verdicts["refused"],
        "failures_by_code": dict(Counter(o.code for o in outcomes if o.verdict == "failed").most_common()),
        "lost_by_reason": dict(Counter(o.code for o in outcomes if o.verdict == "lost").most_common()),
        "routes": dict(Counter(o.route for o in outcomes if o.status == 200)),
        "router_rss_peak_mib": round(peak, 1),
        "router_rss_start_mib": round(rss_start, 1),
        "ttft_ms": {"p50": ms(percentile(ttft, 50)), "p99": ms(percentile(ttft, 99))},
        "e2e_ms": {"p50": ms(percentile(e2e, 50)), "p99": ms(percentile(e2e, 99))},
        "faults_applied": run.faults_applied,
        "faults_injected": dict(run.faults_injected),
        "engine_restarts": restarts,
        "router": router,
        "decoder_buffers_after": buffers,
        "leaks": leaks,
    }


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def report(result: dict[str, Any]) -> str:
    r = result
    lines = [
        f"Soak, {r['connector']}: {r['streams']} requests in {r['seconds']} s through "
        "`tandem router` (static), 1 prefiller + 2 decoders",
        f"  accepted {r['accepted']}: completed {r['completed']}, failed explicitly "
        f"{r['failed_explicitly']}, left by the client {r['left_by_client']}, LOST {r['lost']}; "
        f"refused {r['refused']}",
        f"  explicit failures by code: {r['failures_by_code']}",
        f"  routes (200s): {r['routes']}",
        f"  router RSS: {r['router_rss_start_mib']} MiB at the start, peak {r['router_rss_peak_mib']} MiB",
        f"  completed, TTFT p50 {r['ttft_ms']['p50']} ms, p99 {r['ttft_ms']['p99']} ms; "
        f"end to end p50 {r['e2e_ms']['p50']} ms, p99 {r['e2e_ms']['p99']} ms",
        f"  faults injected (engine counters): {r['faults_injected']}; "
        f"engines restarted: {r['engine_restarts']}",
        f"  router: {', '.join(f'{k} {v:g}' for k, v in r['router'].items() if v)}",
    ]
    lines += [f"  fault at {line}" for line in r["faults_applied"]]
    if r["decoder_buffers_after"]:
        lines.append(f"  decoders' PD buffers after: {r['decoder_buffers_after']}")
    if r["lost"]:
        lines.append(f"  LOST by reason: {r['lost_by_reason']}")
    if r["leaks"]:
        lines.append(f"  LEAKED: {r['leaks']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=2000, help="requests per run (2000)")
    parser.add_argument("--duration", type=float, default=240.0, help="seconds of arrivals per run (240)")
    parser.add_argument("--connector", choices=["lmcache", "nixl", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="300 requests over 30 s, LMCache only")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--keep-logs", type=Path, help="keep the processes' logs in this folder")
    args = parser.parse_args()
    if args.quick:
        # The shortest faults (junk notifications) then hold 1.2 s, a dozen arrivals: the test checks
        # that every kind acted, so a window too short to bite fails rather than passes.
        args.streams, args.duration, args.connector = 300, 30.0, "lmcache"
    connectors = ["lmcache", "nixl"] if args.connector == "both" else [args.connector]
    results = []
    with tempfile.TemporaryDirectory(prefix="tandem-soak-") as scratch:
        work = args.keep_logs or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        for connector in connectors:
            (work / connector).mkdir(exist_ok=True)
            result = asyncio.run(soak(connector, args.streams, args.duration, args.seed, work / connector))
            print(report(result), flush=True)
            results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    bad = any(r["lost"] or r["refused"] or r["leaks"] for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
