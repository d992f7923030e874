"""How many concurrent streams does one simulator process hold on one core? Prints the figures.

Starts ``tandem sim`` pinned to one core (taskset), opens ``--streams`` streaming completions at
once from a lean asyncio client pinned to another core, and reports streams held concurrently,
errors, chunks, wall time, CPU use and the simulator's peak RSS. The baseline is the simulator's
own timing model replayed without any HTTP or CPU cost (the pure scheduler, same parameters, all
streams arriving at once): wall / modelled is what serving them really added (1.0 = nothing; the
connections' arrival spread and any CPU shortfall both count), and the simulator's CPU share says
how much headroom its core has left.

    python benchmarks/sim_streams.py [--streams 500] [--max-tokens 64] [--sim-cpu 0 --client-cpu 1]

Needs Linux (taskset, /proc) and two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tandem.api.timing import EngineTiming
from tandem.sim.testing import free_port
from tandem.sim.twin import Arrival, serve


@dataclass
class Tally:
    open_now: int = 0
    held_max: int = 0
    finished: int = 0
    errors: int = 0
    chunks: int = 0
    first_chunk_s: list[float] = field(default_factory=list)


async def one_stream(port: int, body: bytes, tally: Tally, started: float) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        tally.errors += 1
        return
    request = (
        b"POST /v1/completions HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    writer.write(request)
    held = False
    carry = b""
    try:
        head = await reader.read(65536)
        if not head.startswith(b"HTTP/1.1 200"):
            tally.errors += 1
            return
        data = head
        while data:
            window = carry + data
            count = window.count(b"data: ")
            if count and not held:
                held = True
                tally.open_now += 1
                tally.held_max = max(tally.held_max, tally.open_now)
                tally.first_chunk_s.append(time.perf_counter() - started)
            tally.chunks += count
            if b"data: [DONE]" in window:
                tally.finished += 1
                break
            carry = window[-16:].replace(b"data: ", b"")
            data = await reader.read(65536)
        else:
            tally.errors += 1
    except OSError:
        tally.errors += 1
    finally:
        if held:
            tally.open_now -= 1
        writer.close()


async def drive(port: int, streams: int, prompt_tokens: int, max_tokens: int) -> tuple[Tally, float]:
    body = json.dumps(
        {"prompt": [1000 + i % 500 for i in range(prompt_tokens)], "max_tokens": max_tokens, "stream": True}
    ).encode()
    tally = Tally()
    started = time.perf_counter()
    await asyncio.gather(*(one_stream(port, body, tally, started) for _ in range(streams)))
    return tally, time.perf_counter() - started


def modelled_seconds(timing: EngineTiming, streams: int, prompt_tokens: int, max_tokens: int) -> float:
    """The timing model alone: all streams arrive at once, no CPU or network cost (the twin)."""
    run = serve(timing, [Arrival(0.0, prompt_tokens, max_tokens)] * streams)
    return max(served.finished for served in run.served)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--sim-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    args = parser.parse_args()
    if shutil.which("taskset") is None:
        print("needs taskset", file=sys.stderr)
        return 2
    timing = EngineTiming(max_num_seqs=max(1024, args.streams))
    port = free_port()
    command = [
        "taskset",
        "-c",
        str(args.sim_cpu),
        sys.executable,
        "-m",
        "tandem.cli",
        "sim",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-num-seqs",
        str(timing.max_num_seqs),
        "--uvicorn-log-level",
        "warning",
    ]
    sim = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)
        os.sched_setaffinity(0, {args.client_cpu})
        sim_cpu_before, client_cpu_before = cpu_seconds(sim.pid), time.process_time()
        tally, wall = asyncio.run(drive(port, args.streams, args.prompt_tokens, args.max_tokens))
        sim_cpu = cpu_seconds(sim.pid) - sim_cpu_before
        client_cpu = time.process_time() - client_cpu_before
        rss = peak_rss_mib(sim.pid)
    finally:
        sim.terminate()
        sim.wait()
    modelled = modelled_seconds(timing, args.streams, args.prompt_tokens, args.max_tokens)
    first = sorted(tally.first_chunk_s)
    shape = f"{args.prompt_tokens} prompt, {args.max_tokens} generated tokens"
    print(f"streams requested      {args.streams} ({shape})")
    print(f"streams held at once   {tally.held_max}")
    print(f"streams completed      {tally.finished}")
    print(f"errors                 {tally.errors}")
    print(f"chunks received        {tally.chunks} ({tally.chunks / wall:.0f}/s)")
    if first:
        print(f"first chunk p50 / max  {first[len(first) // 2]:.3f} s / {first[-1]:.3f} s")
    print(f"wall time              {wall:.2f} s")
    print(f"modelled time          {modelled:.2f} s (timing model alone)")
    print(f"wall / modelled        {wall / modelled:.2f}")
    print(f"simulator CPU busy     {sim_cpu / wall:.0%} of its core ({sim_cpu:.2f} s)")
    print(f"client CPU busy        {client_cpu / wall:.0%} of its core")
    print(f"simulator peak RSS     {rss:.0f} MiB")
    return 0 if tally.errors == 0 and tally.finished == args.streams else 1


if __name__ == "__main__":
    sys.exit(main())
