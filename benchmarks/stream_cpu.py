"""CPU per streamed token of ``tandem sim`` serving and ``tandem load`` measuring. Prints the figures.

Starts one ``tandem sim`` (a fast timing model: an 8 ms decode step, 45 ms for a 4k prompt) and
runs ``tandem load`` against it twice: ``--requests`` arrivals at ``--rate`` with ``--output-tokens``
tokens each, then the same arrivals with one token each. Each process's CPU (user + system,
``/proc/PID/stat``; the load client's from its exit status) per 1,000 streamed tokens is the
difference of the two runs divided by the tokens the first streamed beyond the second: what a token
costs, without the process's start-up and each request's prompt. The simulator's all-in figure
divides its CPU over the long run by its tokens (its requests' prompts included).

``--compare REV`` measures the same at a git revision (``git archive`` of the packages, on
PYTHONPATH) in the same invocation, interleaved with the working tree ``--rounds`` times, and prints
the ratios. The measured ITL (mean) and TTFT (p50) show the timing model held: they must not move
between trees.

    python benchmarks/stream_cpu.py [--compare main] [--rounds 3] [--requests 160] [--rate 8]
        [--prompt-tokens 4000] [--output-tokens 200]

Needs Linux (/proc). Figures of issue #13's CPU work: benchmarks/twin/README.md, "CPU".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
# A 4k-token prompt's prefill in 45 ms, not the default 205: the engine keeps up at 8 req/s, so
# the steps batch what they would at the planned rate rather than a growing queue.
SIM_TIMING = ("--prefill-ms-per-token", "0.01")
PACKAGES = ("api", "cli", "load", "planner", "sim", "router", "operator", "devcluster")


@dataclass(frozen=True)
class Run:
    sim_cpu_s: float
    load_cpu_s: float
    tokens: int
    itl_mean_ms: float
    ttft_p50_ms: float


@dataclass(frozen=True)
class Figures:
    sim_per_kilotoken_s: float  # marginal: the long run less the short one, per 1,000 tokens
    load_per_kilotoken_s: float
    sim_all_in_s: float  # the long run's CPU per 1,000 tokens
    itl_mean_ms: float
    ttft_p50_ms: float


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def revision_tree(work: Path, revision: str) -> Path:
    """Tandem's packages at ``revision``, shaped like the installed package (for PYTHONPATH)."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", revision], capture_output=True, text=True, check=True
    ).stdout.strip()
    src = work / f"rev-{sha}"
    src.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", sha, *PACKAGES], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    # Compiled now, not by the first measured process.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src)], check=True)
    package = work / f"tree-{sha}" / "tandem"
    package.mkdir(parents=True)
    for name in PACKAGES:
        (package / name).symlink_to(src / name)
    return package.parent


def environment(tree: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return env


def start_sim(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tandem.cli", "sim", "--host", "127.0.0.1", "--port", str(port)]
    sim = subprocess.Popen([*command, *SIM_TIMING, "--uvicorn-log-level", "warning"], env=env)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return sim
        except httpx.TransportError:
            if time.monotonic() > deadline or sim.poll() is not None:
                sim.kill()
                raise
        time.sleep(0.2)


def load(
    env: dict[str, str], sim: int, port: int, args: argparse.Namespace, output_tokens: int, work: Path
) -> Run:
    """One ``tandem load`` run; its CPU from its exit status, the simulator's over the run."""
    summary = work / "summary.json"
    command = [
        sys.executable, "-m", "tandem.cli", "load", f"http://127.0.0.1:{port}",
        "--rate", str(args.rate), "--max-requests", str(args.requests),
        "--prompt-tokens", str(args.prompt_tokens), "--output-tokens", str(output_tokens),
        "--no-progress", "--json", str(summary),
    ]  # fmt: skip
    sim_before = cpu_seconds(sim)
    client = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(client.pid, 0)
    sim_cpu = cpu_seconds(sim) - sim_before
    client.returncode = os.waitstatus_to_exitcode(status)
    data = json.loads(summary.read_text())
    if client.returncode != 0 or data["failed"]:
        raise RuntimeError(f"tandem load: exit {client.returncode}, {data['errors_by_kind']}")
    return Run(
        sim_cpu,
        usage.ru_utime + usage.ru_stime,
        data["total_output_tokens"],
        data["mean_itl_ms"],
        data["median_ttft_ms"],
    )


def measure(tree: Path | None, port: int, args: argparse.Namespace, work: Path) -> Figures:
    env = environment(tree)
    sim = start_sim(env, port)
    try:
        long = load(env, sim.pid, port, args, args.output_tokens, work)
        short = load(env, sim.pid, port, args, 1, work)
    finally:
        sim.terminate()
        sim.wait()
    extra = (long.tokens - short.tokens) / 1000
    return Figures(
        (long.sim_cpu_s - short.sim_cpu_s) / extra,
        (long.load_cpu_s - short.load_cpu_s) / extra,
        long.sim_cpu_s / long.tokens * 1000,
        long.itl_mean_ms,
        long.ttft_p50_ms,
    )


def _median(runs: list[Figures]) -> Figures:
    return Figures(*(statistics.median(getattr(r, f.name) for r in runs) for f in fields(Figures)))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--compare", metavar="REV", help="also measure this git revision, e.g. main")
    parser.add_argument("--rounds", type=int, default=1, help="measurements of each tree, interleaved")
    parser.add_argument("--requests", type=int, default=160)
    parser.add_argument("--rate", type=float, default=8.0, help="requests per second")
    parser.add_argument("--prompt-tokens", type=int, default=4000)
    parser.add_argument("--output-tokens", type=int, default=200)
    parser.add_argument("--port", type=int, default=18431)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stream-cpu-") as scratch:
        work = Path(scratch)
        trees: dict[str, Path | None] = {"working tree": None}
        if args.compare:
            trees = {args.compare: revision_tree(work, args.compare), **trees}
        results: dict[str, list[Figures]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, tree in trees.items():
                results[name].append(measure(tree, args.port, args, work))
    shape = f"{args.requests} requests x {args.output_tokens} tokens, {args.prompt_tokens}-token prompts"
    print(f"CPU-seconds per 1,000 streamed tokens ({shape}, {args.rate:g} req/s; median of {args.rounds})")
    print(f"{'tree':16} {'sim':>7} {'load':>7} {'sim all-in':>11} {'ITL mean':>9} {'TTFT p50':>9}")
    medians = {name: _median(runs) for name, runs in results.items()}
    for name, m in medians.items():
        print(
            f"{name:16} {m.sim_per_kilotoken_s:7.4f} {m.load_per_kilotoken_s:7.4f} {m.sim_all_in_s:11.4f} "
            f"{m.itl_mean_ms:7.2f}ms {m.ttft_p50_ms:7.1f}ms"
        )
    if args.compare:
        before, after = medians[args.compare], medians["working tree"]
        ratios = (
            f"{label} {getattr(after, key) / getattr(before, key):.2f}"
            for label, key in (
                ("sim", "sim_per_kilotoken_s"),
                ("load", "load_per_kilotoken_s"),
                ("sim all-in", "sim_all_in_s"),
            )
        )
        print(f"working tree / {args.compare}: {', '.join(ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
