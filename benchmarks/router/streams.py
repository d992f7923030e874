"""Hold many SSE streams open through a proxy at once; print one JSON line with what happened.

    python benchmarks/router/streams.py URL --streams 5000 --ramp 5 --deadline 60

Each stream is one POST of a streaming chat request on its own connection, started evenly over the
ramp. A stream counts as held while its answer's headers are in and its last event is not; it is
an error unless it answers 200 and ends with `data: [DONE]` and no error event. The peak of held
streams is what the proxy carried at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

BODY = json.dumps(
    {
        "model": "bench/model",
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": True,
        "max_tokens": 16,
    }
).encode()
DONE = b"data: [DONE]\n\n"


@dataclass
class Tally:
    held: int = 0
    peak: int = 0
    completed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    first_event_s: list[float] = field(default_factory=list)


def raise_open_files(wanted: int) -> int:
    """Raise this process's descriptor limit to `wanted`: the hard limit too where allowed (root),
    else as far as it goes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _one(session: aiohttp.ClientSession, url: str, start_at: float, tally: Tally) -> None:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    sent = time.monotonic()
    try:
        async with session.post(url, data=BODY, headers={"Content-Type": "application/json"}) as resp:
            if resp.status != 200:
                tally.errors[f"status {resp.status}"] += 1
                await resp.read()
                return
            tally.held += 1
            tally.peak = max(tally.peak, tally.held)
            try:
                tail, first = b"", True
                async for chunk in resp.content.iter_any():
                    if first:
                        tally.first_event_s.append(time.monotonic() - sent)
                        first = False
                    tail = (tail + chunk)[-512:]
                    if b'data: {"error"' in chunk:
                        tally.errors["error event"] += 1
                        return
            finally:
                tally.held -= 1
            if tail.endswith(DONE):
                tally.completed += 1
            else:
                tally.errors["no [DONE]"] += 1
    except (aiohttp.ClientError, OSError) as exc:
        tally.errors[type(exc).__name__] += 1


async def hold(url: str, streams: int, ramp_s: float, deadline_s: float) -> dict[str, object]:
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    began = time.monotonic()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [
            asyncio.create_task(_one(session, url, began + ramp_s * i / streams, tally))
            for i in range(streams)
        ]
        _, pending = await asyncio.wait(tasks, timeout=deadline_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        tally.errors["unfinished at deadline"] += len(pending)
    firsts = sorted(tally.first_event_s)
    return {
        "streams": streams,
        "peak_held": tally.peak,
        "completed": tally.completed,
        "errors": sum(tally.errors.values()),
        "error_kinds": dict(+tally.errors),
        "first_event_p50_ms": round(1000 * firsts[len(firsts) // 2], 1) if firsts else None,
        "first_event_p99_ms": round(1000 * firsts[int(len(firsts) * 0.99)], 1) if firsts else None,
        "seconds": round(time.monotonic() - began, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url", help="the proxy's /v1/chat/completions URL")
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which streams start")
    parser.add_argument(
        "--deadline", type=float, default=60.0, help="seconds before open streams count as errors"
    )
    args = parser.parse_args()
    limit = raise_open_files(args.streams + 256)
    if limit < args.streams + 64:
        raise SystemExit(f"open-file limit {limit} is too low for {args.streams} streams")
    import uvloop

    result = uvloop.run(hold(args.url, args.streams, args.ramp, args.deadline))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
