"""The router benchmark: Tandem's router against vllm-project's Rust router and nginx proxy_pass.

    .venv/bin/python benchmarks/router/run.py [--seconds 5] [--rounds 2] [--streams 5000] [--profile]

One run on one machine. An nginx backend answers at once (a canned completion, a canned SSE
stream of chat chunks), so it is never the bottleneck. Each proxy runs pinned to the same single
core (`taskset -c <proxy cpu>`, default 1); wrk, the backend and the stream client share the other
cores. For each target -- the backend called directly, nginx `proxy_pass`, `vllm-router` (static
worker, round robin) and Tandem's router (static mode, one decode endpoint, a short prompt: route
`direct`) -- it measures:

  * req/s at 64 connections, non-streaming completions and streaming chat completions (wrk);
  * latency p50/p99 at a moderate rate (8 connections, 8 ms apart: about 1k req/s), and the latency
    each proxy ADDS to calling the backend directly;

then holds 5,000 concurrent SSE streams (a slow stream: one event a second) open through Tandem's
router and through vllm-router, counting errors and sampling the proxy's peak RSS. Targets are
rounds of interleaved measurements, the proxies taking turns at going first; each figure is the
best of its rounds (other load on a shared machine only ever slows a run down), and Tandem against
a `--compare` revision is also the median of the rounds' ratios. Ratios are what count: absolute
figures depend on the machine.

Sets up what is missing: nginx and its echo module (apt-get, Debian), wrk (apt-get), vllm-router
and py-spy in a throwaway venv under --work-dir (never the project's venv). Binds loopback only,
and stops every process it started. `--compare REV|DIR` adds Tandem's router as of a git revision
(e.g. HEAD) or from a copy of the tree (before/after a change, in the same run); `--profile`
records Tandem's router under load with py-spy and prints where the time goes.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from streams import raise_open_files

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VLLM_ROUTER = "vllm-router==0.1.17"
ECHO_MODULE = "lib/nginx/modules/ngx_http_echo_module.so"  # relative to nginx's prefix (/usr)
MODEL = "bench/model"
COMPLETION_BODY = json.dumps({"model": MODEL, "prompt": "Say hello", "max_tokens": 16})
STREAM_BODY = json.dumps(
    {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "stream": True, "max_tokens": 16}
)
COMPLETION = json.dumps(
    {
        "id": "cmpl-bench",
        "object": "text_completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {"index": 0, "text": " Hello there, how can I help?", "logprobs": None, "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 8, "total_tokens": 11},
    },
    separators=(",", ":"),
)
METRICS = "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\nvllm:kv_cache_usage_perc 0\n"
HOLD_INTERVAL_S = 1.0  # the slow stream: one event this often
HOLD_EVENTS = 12  # content events in the slow stream
NOFILE = 65536
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TANDEM, RUST, DIRECT = "tandem", "vllm-router", "direct (no proxy)"


def chat_event(delta: dict[str, str], finish: str | None = None) -> str:
    chunk = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return "data: " + json.dumps(chunk, separators=(",", ":")) + "\n\n"


def echo_stream(contents: list[str], pause_s: float) -> str:
    """nginx echo directives for a chat stream: a role event, the contents, a finish, [DONE];
    each event flushed as its own chunk, `pause_s` apart."""
    events = [chat_event({"role": "assistant", "content": ""})]
    events += [chat_event({"content": text}) for text in contents]
    events += [chat_event({}, "length"), "data: [DONE]\n\n"]
    lines = []
    for i, item in enumerate(events):
        if i and pause_s:
            lines.append(f"echo_sleep {pause_s};")
        lines += [f"echo -n '{_nginx_string(item)}';", "echo_flush;"]
    return "\n".join(" " * 12 + line for line in lines)


def _nginx_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


def render(template: str, out: Path, **values: object) -> Path:
    text = (HERE / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    if "@" in re.sub(r"#.*", "", text):
        raise RuntimeError(f"{template}: unfilled placeholder")
    out.write_text(text)
    return out


# --- setup ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    nginx: str
    echo_module: Path
    wrk: str
    vllm_router: Path
    py_spy: Path | None


def _apt_install(packages: list[str]) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"missing {' '.join(packages)}: run `sudo apt-get install -y {' '.join(packages)}`")
    print(f"# apt-get install {' '.join(packages)}", flush=True)
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
    if subprocess.run(install, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], stdout=subprocess.DEVNULL, check=True)
        subprocess.run(install, stdout=subprocess.DEVNULL, check=True)


def _nginx_path() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def _venv_tool(work: Path, tool: str, requirement: str) -> Path:
    """A tool pip-installed into the benchmark's own throwaway venv."""
    venv = work / "venv"
    binary = venv / "bin" / tool
    if not binary.exists():
        if not (venv / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        print(f"# pip install {requirement} into {venv}", flush=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q", requirement]
        subprocess.run(pip, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if not binary.exists():
            subprocess.run(pip, check=True)  # again, showing why
    return binary


def _echo_module(nginx: str | None) -> Path:
    """The echo module of this nginx (Debian: /usr/sbin/nginx, /usr/lib/nginx/modules)."""
    prefix = Path(nginx).resolve().parent.parent if nginx else Path("/usr")
    return prefix / ECHO_MODULE


def set_up(work: Path, profile: bool) -> Tools:
    packages = []
    if _nginx_path() is None:
        packages.append("nginx")
    if not _echo_module(_nginx_path()).exists():
        packages.append("libnginx-mod-http-echo")
    if shutil.which("wrk") is None:
        packages.append("wrk")
    if packages:
        _apt_install(packages)
    nginx, wrk = _nginx_path(), shutil.which("wrk")
    assert nginx is not None and wrk is not None
    return Tools(
        nginx=nginx,
        echo_module=_echo_module(nginx),
        wrk=wrk,
        vllm_router=_venv_tool(work, "vllm-router", VLLM_ROUTER),
        py_spy=_venv_tool(work, "py-spy", "py-spy") if profile else None,
    )


# --- processes ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Processes:
    """Every process the benchmark starts, each in its own session so that its children stop too."""

    def __init__(self, logs: Path) -> None:
        self._logs = logs
        self._running: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, cmd: list[str], cpus: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with (self._logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                ["taskset", "-c", cpus, *cmd],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        self._running.append(proc)
        return proc

    def log_tail(self, name: str) -> str:
        path = self._logs / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc in self._running:
            self._running.remove(proc)
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for proc in list(reversed(self._running)):
            self.stop(proc)


def post(port: int, path: str, body: str, timeout: float = 2.0) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_serving(
    port: int, proc: subprocess.Popen[bytes], name: str, procs: Processes, timeout: float = 60
) -> dict[str, str]:
    """Until a completion through the target answers 200; returns that answer's headers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{procs.log_tail(name)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            status, headers, _ = post(port, "/v1/completions", COMPLETION_BODY)
            if status == 200:
                return headers
        time.sleep(0.1)
    raise RuntimeError(f"{name} did not serve within {timeout} s:\n{procs.log_tail(name)}")


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    proc: subprocess.Popen[bytes] | None = None  # the proxy's process (None: the backend itself)


def start_backend(tools: Tools, work: Path, procs: Processes, cpus: str) -> tuple[int, int]:
    instant, slow = free_port(), free_port()
    conf = render(
        "backend.conf",
        work / "backend.conf",
        ECHO_MODULE=tools.echo_module,
        NOFILE=NOFILE,
        CONNECTIONS=32768,
        WORK=work,
        INSTANT_PORT=instant,
        SLOW_PORT=slow,
        COMPLETION=_nginx_string(COMPLETION),
        MODELS=_nginx_string(json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model"}]})),
        METRICS=_nginx_string(METRICS),
        INSTANT_STREAM=echo_stream([" Hello", " there"], 0),
        SLOW_STREAM=echo_stream([f" word{i}" for i in range(HOLD_EVENTS)], HOLD_INTERVAL_S),
    )
    proc = procs.start("backend", [tools.nginx, "-c", str(conf), "-p", str(work)], cpus)
    wait_serving(instant, proc, "backend", procs)
    return instant, slow


def start_nginx_proxy(tools: Tools, work: Path, procs: Processes, cpu: str, backend: int) -> Target:
    port = free_port()
    conf = render(
        "proxy.conf",
        work / "proxy.conf",
        NOFILE=NOFILE,
        CONNECTIONS=32768,
        WORK=work,
        PORT=port,
        BACKEND_PORT=backend,
    )
    proc = procs.start("nginx", [tools.nginx, "-c", str(conf), "-p", str(work)], cpu)
    wait_serving(port, proc, "nginx", procs)
    return Target("nginx proxy_pass", port, proc)


def start_vllm_router(tools: Tools, procs: Processes, cpu: str, backend: int, log: str) -> Target:
    port = free_port()
    cmd = [
        str(tools.vllm_router),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--worker-urls", f"http://127.0.0.1:{backend}",
        "--policy", "round_robin",
        "--prometheus-host", "127.0.0.1",
        "--prometheus-port", str(free_port()),
        "--log-level", "warning",
    ]  # fmt: skip
    proc = procs.start(log, cmd, cpu)
    wait_serving(port, proc, log, procs)
    return Target(RUST, port, proc)


def start_tandem(
    procs: Processes, cpu: str, backend: int, name: str, log: str, tree: Path | None = None
) -> Target:
    """Tandem's router in static mode; from `tree` (a package-shaped source tree) when given."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "tandem.cli", "router",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--notify-port", str(free_port()),
        "--static-decode", f"http://127.0.0.1:{backend}",
        "--served-model", MODEL,
        # Admission's default (256 per decode endpoint) would queue a one-endpoint pool's 5,000
        # streams: the benchmark asks for what it measures.
        "--max-inflight-per-decode", "8192",
        "--max-queue", "8192",
        "--drain-timeout", "1",
        "--log-level", "warning",
    ]  # fmt: skip
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    proc = procs.start(log, cmd, cpu, env)
    headers = wait_serving(port, proc, log, procs)
    if headers.get("x-tandem-route") != "direct":
        raise RuntimeError(
            f"{name} routed the benchmark's request {headers.get('x-tandem-route')!r}, not direct"
        )
    return Target(name, port, proc)


def comparison_tree(work: Path, source: str) -> Path:
    """Tandem's router from elsewhere, shaped like the installed package (for PYTHONPATH): `source`
    is a git revision, or a directory holding a copy of the repository's api/, cli/, planner/ and
    router/ (the router sizes handoffs by the planner's formula)."""
    components = ("api", "cli", "planner", "router")
    if Path(source).is_dir():
        src = Path(source).resolve()
        root = work / f"dir-{hashlib.sha1(str(src).encode()).hexdigest()[:10]}"
    else:
        sha = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", source],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        root = work / f"rev-{sha}"
        src = root / "src"
        if not src.exists():
            src.mkdir(parents=True)
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", source, *components], capture_output=True, check=True
            )
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    package = root / "tree" / "tandem"
    package.mkdir(parents=True, exist_ok=True)
    for component in components:
        link = package / component
        if not link.is_symlink():
            link.symlink_to(src / component)
    return root / "tree"


# --- measurements ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    rps: float
    per_cpu_s: float | None  # requests per second of the proxy's CPU time (None: no proxy)
    errors: int
    p50_ms: float
    p99_ms: float


def wrk(
    tools: Tools,
    cpus: str,
    target: Target,
    path: str,
    body: str,
    *,
    connections: int,
    seconds: int,
    delay_ms: int | None = None,
) -> Load:
    env = {**os.environ, "WRK_BODY": body, "WRK_DELAY_MS": str(delay_ms or "")}
    cmd = [
        "taskset", "-c", cpus, tools.wrk, "-t", "1", "-c", str(connections), "-d", f"{seconds}s",
        "--timeout", "10s", "-s", str(HERE / "wrk.lua"), f"http://127.0.0.1:{target.port}{path}",
    ]  # fmt: skip
    pid = target.proc.pid if target.proc is not None else None
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    out = subprocess.run(
        cmd, capture_output=True, text=True, env=env, check=True, timeout=seconds + 30
    ).stdout
    cpu = cpu_seconds(pid) - cpu_before if pid is not None else 0.0
    line = next((x for x in out.splitlines() if x.startswith("BENCH ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    r = json.loads(line[len("BENCH ") :])
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    return Load(
        rps=r["requests"] / (r["duration_us"] / 1e6),
        per_cpu_s=r["requests"] / cpu if cpu > 0 else None,
        errors=errors,
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
    )


@dataclass
class Figures:
    """A target's best figures over the rounds (other load on the machine only slows a run down)."""

    json_rps: float = 0.0
    json_per_cpu_s: float = 0.0
    sse_rps: float = 0.0
    sse_per_cpu_s: float = 0.0
    p50_ms: float = float("inf")
    p99_ms: float = float("inf")
    errors: int = 0  # over all rounds
    rss_mb: float = 0.0
    rounds: list[tuple[Load, Load]] = field(default_factory=list)  # (completions, streams) of each round

    def add(self, completions: Load, streams: Load, latency: Load) -> None:
        self.rounds.append((completions, streams))
        self.json_rps = max(self.json_rps, completions.rps)
        self.json_per_cpu_s = max(self.json_per_cpu_s, completions.per_cpu_s or 0.0)
        self.sse_rps = max(self.sse_rps, streams.rps)
        self.sse_per_cpu_s = max(self.sse_per_cpu_s, streams.per_cpu_s or 0.0)
        self.p50_ms = min(self.p50_ms, latency.p50_ms)
        self.p99_ms = min(self.p99_ms, latency.p99_ms)
        self.errors += completions.errors + streams.errors + latency.errors


def measure(tools: Tools, cpus: str, target: Target, seconds: int, figures: Figures) -> None:
    def run(
        path: str, body: str, connections: int, delay_ms: int | None = None, time_s: int = seconds
    ) -> Load:
        return wrk(
            tools, cpus, target, path, body, connections=connections, seconds=time_s, delay_ms=delay_ms
        )

    run("/v1/completions", COMPLETION_BODY, 64, time_s=1)  # warm-up
    completions = run("/v1/completions", COMPLETION_BODY, 64)
    streams = run("/v1/chat/completions", STREAM_BODY, 64)
    latency = run("/v1/completions", COMPLETION_BODY, 8, delay_ms=8)
    figures.add(completions, streams, latency)
    if target.proc is not None:
        figures.rss_mb = max(figures.rss_mb, rss_mb(target.proc.pid))
    per_cpu = f"{completions.per_cpu_s:>7.0f} per CPU-s" if completions.per_cpu_s else " " * 17
    sse_per_cpu = f"{streams.per_cpu_s:>7.0f} per CPU-s" if streams.per_cpu_s else " " * 17
    print(
        f"#   {target.name:<20} {completions.rps:>7.0f} req/s {per_cpu}  {streams.rps:>7.0f} SSE req/s "
        f"{sse_per_cpu}  p50 {latency.p50_ms:.3f} ms  p99 {latency.p99_ms:.3f} ms  errors {figures.errors}",
        flush=True,
    )


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process (all its threads) and its descendants."""
    ticks = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants, MB."""
    total_kb = 0
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            match = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{member}/status").read_text(), re.MULTILINE)
            total_kb += int(match.group(1)) if match else 0
    return total_kb / 1024


@dataclass
class Hold:
    name: str
    result: dict[str, object] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    idle_rss_mb: float = 0.0


def hold_streams(target: Target, cpus: str, streams: int, ramp_s: float) -> Hold:
    """Open `streams` slow SSE streams through the target at once; sample its RSS meanwhile."""
    assert target.proc is not None
    pid = target.proc.pid
    hold = Hold(target.name, idle_rss_mb=rss_mb(pid))
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            hold.peak_rss_mb = max(hold.peak_rss_mb, rss_mb(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    deadline = ramp_s + (HOLD_EVENTS + 2) * HOLD_INTERVAL_S + 30
    cmd = [
        "taskset", "-c", cpus, sys.executable, str(HERE / "streams.py"),
        f"http://127.0.0.1:{target.port}/v1/chat/completions",
        "--streams", str(streams), "--ramp", str(ramp_s), "--deadline", str(deadline),
    ]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=deadline + 30)
    finally:
        stop.set()
        sampler.join()
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"stream client failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    hold.result = json.loads(lines[-1])
    return hold


# --- profile --------------------------------------------------------------------------------------


def profile(tools: Tools, cpus: str, target: Target, work: Path, seconds: int) -> Path:
    """py-spy on Tandem's router while wrk loads it with completions (64 connections)."""
    assert tools.py_spy is not None and target.proc is not None
    raw = work / "tandem-profile.txt"
    spy = subprocess.Popen(
        ["taskset", "-c", cpus, str(tools.py_spy), "record", "--native", "-r", "250", "-d", str(seconds),
         "-p", str(target.proc.pid), "-f", "raw", "-o", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wrk(tools, cpus, target, "/v1/completions", COMPLETION_BODY, connections=64, seconds=seconds + 2)
    finally:
        _, err = spy.communicate(timeout=60)
    if spy.returncode != 0 or not raw.exists():
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-1000:]}")
    subprocess.run([sys.executable, str(HERE / "hotpath.py"), str(raw)], check=True)
    return raw


# --- report ---------------------------------------------------------------------------------------


def report(results: dict[str, Figures], holds: list[Hold]) -> None:
    direct = results[DIRECT]
    print()
    print(
        f"{'target':<22}{'req/s':>8}{'/CPU-s':>8}{'SSE r/s':>9}{'/CPU-s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'+p50':>8}{'+p99':>8}{'errors':>7}{'RSS MB':>7}"
    )
    for name, f in results.items():
        added_p50 = f.p50_ms - direct.p50_ms if name != DIRECT else 0.0
        added_p99 = f.p99_ms - direct.p99_ms if name != DIRECT else 0.0
        print(
            f"{name:<22}{f.json_rps:>8.0f}{f.json_per_cpu_s:>8.0f}{f.sse_rps:>9.0f}{f.sse_per_cpu_s:>8.0f}"
            f"{f.p50_ms:>8.3f}{f.p99_ms:>8.3f}{added_p50:>8.3f}{added_p99:>8.3f}{f.errors:>7}{f.rss_mb:>7.0f}"
        )
    if RUST in results:
        print()
        rust = results[RUST]
        for name, f in results.items():
            if name.startswith(TANDEM):
                print(
                    f"{name} / {RUST}: req/s {f.json_rps / rust.json_rps:.2f} "
                    f"(per CPU-s {f.json_per_cpu_s / rust.json_per_cpu_s:.2f}), "
                    f"SSE req/s {f.sse_rps / rust.sse_rps:.2f} "
                    f"(per CPU-s {f.sse_per_cpu_s / rust.sse_per_cpu_s:.2f})"
                )
    if TANDEM in results:
        for name, f in results.items():
            if name.startswith(f"{TANDEM}@"):
                print(paired(results[TANDEM], f, name))
    if holds:
        print()
        print(
            f"{'concurrent SSE streams':<22}{'asked':>7}{'held':>7}{'done':>7}{'errors':>8}"
            f"{'1st event p50/p99 ms':>22}{'idle RSS':>10}{'peak RSS MB':>13}"
        )
        for h in holds:
            r = h.result
            first = f"{r['first_event_p50_ms']} / {r['first_event_p99_ms']}"
            print(
                f"{h.name:<22}{r['streams']:>7}{r['peak_held']:>7}{r['completed']:>7}{r['errors']:>8}"
                f"{first:>22}{h.idle_rss_mb:>10.0f}{h.peak_rss_mb:>13.0f}"
            )
            if r["error_kinds"]:
                print(f"  errors: {r['error_kinds']}")
    if TANDEM in results:
        print()
        for what, value, ok in targets_met(results, holds):
            print(f"target: {what:<44}{value:>24}  {'met' if ok else 'NOT met'}")


def paired(tandem: Figures, other: Figures, name: str) -> str:
    """Tandem against another of its revisions, round by round: the median of the rounds' ratios
    (a round measures both under about the same load from elsewhere, so its ratio cancels most of it)."""
    rounds = list(zip(tandem.rounds, other.rounds, strict=True))
    figures = []
    for i, what in ((0, "req/s"), (1, "SSE req/s")):
        wall = [a[i].rps / b[i].rps for a, b in rounds]
        cpu = [a[i].per_cpu_s / b[i].per_cpu_s for a, b in rounds if a[i].per_cpu_s and b[i].per_cpu_s]
        per_cpu = f"{statistics.median(cpu):.3f}" if cpu else "-"
        figures.append(f"{what} {statistics.median(wall):.3f} (per CPU-s {per_cpu})")
    return f"{TANDEM} / {name}, medians of {len(rounds)} paired rounds: {', '.join(figures)}"


def targets_met(results: dict[str, Figures], holds: list[Hold]) -> list[tuple[str, str, bool]]:
    """The issue's targets for Tandem's router, with what this run reached."""
    tandem = results[TANDEM]
    checks = []
    if RUST in results:
        ratio = tandem.json_rps / results[RUST].json_rps
        per_cpu = tandem.json_per_cpu_s / results[RUST].json_per_cpu_s
        value = f"{ratio:.0%} ({per_cpu:.0%} per CPU-s)"
        checks.append((f"req/s >= 30% of {RUST}'s, one core each", value, ratio >= 0.30))
    added = tandem.p50_ms - results[DIRECT].p50_ms
    checks.append(("added p50 <= 2 ms", f"{added:.3f} ms", added <= 2.0))
    hold = next((h for h in holds if h.name == TANDEM), None)
    if hold is not None:
        r = hold.result
        ok = r["peak_held"] == r["streams"] and r["errors"] == 0
        checks.append(
            (
                f"{r['streams']} concurrent streams, no errors",
                f"{r['peak_held']} held, {r['errors']} errors",
                ok,
            )
        )
        checks.append(("RSS <= 600 MB holding them", f"{hold.peak_rss_mb:.0f} MB", hold.peak_rss_mb <= 600))
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5, help="per wrk measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; figures are the best")
    parser.add_argument("--streams", type=int, default=5000, help="concurrent SSE streams to hold (0: skip)")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which the streams open")
    parser.add_argument("--proxy-cpu", type=int, default=1, help="the one core every proxy is pinned to")
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="REV|DIR",
        help="also Tandem's router at a git revision, or from a copy of the repository's api/ cli/ router/",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy Tandem's router under load")
    parser.add_argument("--profile-seconds", type=int, default=15)
    parser.add_argument("--only", action="append", choices=("nginx", RUST, TANDEM), help="proxies to measure")
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "tandem-router-bench")
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))
    if args.proxy_cpu not in cores or len(cores) < 2:
        raise SystemExit(f"needs at least 2 cores, --proxy-cpu among them (have {cores})")
    proxy_cpu = str(args.proxy_cpu)
    load_cpus = ",".join(str(c) for c in cores if c != args.proxy_cpu)
    print(
        f"# proxies pinned to cpu {proxy_cpu}; backend, wrk and stream client on cpu(s) {load_cpus}",
        flush=True,
    )

    work: Path = args.work_dir
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    tools = set_up(work, args.profile)
    trees = {
        f"{TANDEM}@{Path(source).name or source}": comparison_tree(work, source) for source in args.compare
    }
    raise_open_files(NOFILE)  # inherited by every proxy: thousands of streams need descriptors
    procs = Processes(Path(tempfile.mkdtemp(prefix="logs-", dir=work)))
    atexit.register(procs.stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    only = set(args.only or ("nginx", RUST, TANDEM))
    try:
        instant, slow = start_backend(tools, work, procs, load_cpus)
        targets = [Target(DIRECT, instant)]
        if "nginx" in only:
            targets.append(start_nginx_proxy(tools, work, procs, proxy_cpu, instant))
        if RUST in only:
            targets.append(start_vllm_router(tools, procs, proxy_cpu, instant, RUST))
        if TANDEM in only:
            targets.append(start_tandem(procs, proxy_cpu, instant, TANDEM, TANDEM))
        for name, tree in trees.items():
            targets.append(start_tandem(procs, proxy_cpu, instant, name, name, tree))

        results = {t.name: Figures() for t in targets}
        for round_ in range(args.rounds):
            print(f"# round {round_ + 1}/{args.rounds}", flush=True)
            # The proxies take turns at going first: a target measured always in the same place
            # (say, right after the backend alone at full speed) read up to 13% low on the 2-core
            # machine against the same code measured elsewhere in the round.
            proxies = targets[1:]
            turn = round_ % len(proxies) if proxies else 0
            for target in [targets[0], *proxies[turn:], *proxies[:turn]]:
                measure(tools, load_cpus, target, args.seconds, results[target.name])
        if args.profile and TANDEM in only:
            tandem = next(t for t in targets if t.name == TANDEM)
            try:
                profile(tools, load_cpus, tandem, work, args.profile_seconds)
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                print(f"# no profile: {exc}", flush=True)  # the measurements still stand

        holds = []
        if args.streams:
            # A fresh proxy on the slow backend for each; the others idle meanwhile.
            holders = []
            if TANDEM in only:
                holders.append(lambda: start_tandem(procs, proxy_cpu, slow, TANDEM, f"{TANDEM}-hold"))
            if RUST in only:
                holders.append(lambda: start_vllm_router(tools, procs, proxy_cpu, slow, f"{RUST}-hold"))
            for start in holders:
                target = start()
                print(f"# holding {args.streams} streams through {target.name}", flush=True)
                holds.append(hold_streams(target, load_cpus, args.streams, args.ramp))
                assert target.proc is not None
                procs.stop(target.proc)
        report(results, holds)
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
