"""What tracing costs the router's data path: CPU microseconds per request, in-process.

    python benchmarks/router_tracing_overhead.py [--requests 5000] [--rounds 5] [--modes off,unsampled,on]

The router app (static mode, one decode endpoint, a short prompt: route `direct`) is called
through ASGI in this process, no client sockets; its engine is a canned-completion backend on
loopback, over the router's own engine client. Modes: `off`, the default (no tracer: the no-op
path); `on`, every request traced and sampled, into a provider with no exporter (the cost of
making the spans, not of shipping them, which a background thread does); `unsampled`, traced
but never sampled (a sampling ratio's other requests: their traceparent still goes out). Rounds of the modes
interleave; each figure is the best round (load on a shared machine only slows a run down).
Run it from another checkout (`git archive main`) to compare `off` before and after a change.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from canned_backend import BODY, canned_server

from tandem.devcluster.processes import free_port
from tandem.router.app import create_app
from tandem.router.settings import RouterSettings, StaticPoolSettings

REQUEST = BODY.encode()


async def call(app: Any) -> int:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/completions",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(REQUEST))],
    }
    sent = False
    done = asyncio.Event()
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": REQUEST, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    done.set()
    return status


async def lifespan(app: Any) -> tuple[asyncio.Task[None], asyncio.Queue[dict[str, Any]]]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(app({"type": "lifespan"}, inbox.get, outbox.put))
    message = await outbox.get()
    assert message["type"] == "lifespan.startup.complete", message
    return task, inbox


async def measure(mode: str, url: str, requests: int) -> float:
    settings = RouterSettings(
        host="127.0.0.1",
        port=free_port(),
        notify_port=free_port(),
        static=StaticPoolSettings(model="m", decode=(url,), threshold=100000),
        scrape_interval_s=0,
    )
    if mode in ("on", "unsampled"):
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

        sampler = ALWAYS_ON if mode == "on" else ALWAYS_OFF
        spans = TracerProvider(sampler=sampler, shutdown_on_exit=False)
        app = create_app(settings, spans=spans)  # type: ignore[call-arg]
    else:
        app = create_app(settings)
    task, inbox = await lifespan(app)
    try:
        for _ in range(200):  # warm up: connections, caches
            assert await call(app) == 200
        started = time.process_time()
        for _ in range(requests):
            await call(app)
        return (time.process_time() - started) / requests * 1e6
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await task


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="off,unsampled,on")
    args = parser.parse_args()
    port = free_port()
    server = await canned_server(port)
    modes = args.modes.split(",")
    best = dict.fromkeys(modes, float("inf"))
    try:
        for _ in range(args.rounds):
            for mode in modes:
                best[mode] = min(best[mode], await measure(mode, f"http://127.0.0.1:{port}", args.requests))
    finally:
        server.close()
    for mode in modes:
        print(f"{mode}: {best[mode]:.1f} us/request (best of {args.rounds} x {args.requests})")


if __name__ == "__main__":
    asyncio.run(main())
