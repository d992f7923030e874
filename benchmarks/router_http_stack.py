"""Which HTTP stack should carry the router's data path? Prints req/s per proxy core.

Each candidate is a minimal pass-through proxy (POST body in, backend answer out) pinned to one
core; a canned-completion backend and wrk share the other cores. The figures are ratios against
the `aiohttp-web` candidate measured in the same run, so they compare across machines. The
`tandem` candidate is the real router in static mode, to see what routing costs on top.

    python benchmarks/router_http_stack.py [--seconds 5] [--connections 64]

Needs `wrk` on PATH and at least 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from canned_backend import BODY, canned_server

from tandem.devcluster.processes import free_port

CANDIDATES = ("aiohttp-web", "raw-asgi-uvicorn", "tandem")


async def _serve_backend(port: int) -> None:
    server = await canned_server(port)
    await server.serve_forever()


async def _serve_aiohttp_web(port: int, backend: str) -> None:
    import aiohttp
    from aiohttp import web

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        async with session.post(backend, data=body, headers={"Content-Type": "application/json"}) as resp:
            return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/completions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    await asyncio.Event().wait()


def _run_raw_asgi(port: int, backend: str) -> None:
    import aiohttp
    import uvicorn

    session: list[aiohttp.ClientSession] = []

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        async with session[0].post(backend, data=b"".join(chunks)) as resp:
            payload = await resp.read()
        await send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        backlog=1024,
    )


def _serve(kind: str, port: int, backend_port: int) -> None:
    backend = f"http://127.0.0.1:{backend_port}/v1/completions"
    if kind == "backend":
        import uvloop

        uvloop.run(_serve_backend(port))
    elif kind == "aiohttp-web":
        import uvloop

        uvloop.run(_serve_aiohttp_web(port, backend))
    elif kind == "raw-asgi-uvicorn":
        _run_raw_asgi(port, backend)
    else:
        raise SystemExit(f"unknown candidate {kind}")


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _start(cmd: list[str], cpus: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["taskset", "-c", cpus, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wrk(port: int, seconds: int, connections: int, cpus: str, lua: Path) -> tuple[float, str]:
    out = subprocess.run(
        [
            "taskset",
            "-c",
            cpus,
            "wrk",
            "-t",
            "1",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            lua,
            f"http://127.0.0.1:{port}/v1/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)", out.stdout, re.MULTILINE)
    return rps, p50.group(1) if p50 else "?"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", choices=CANDIDATES, action="append")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backend-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.port, args.backend_port)
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("needs at least 2 cores")
    proxy_cpu, rest = str(cores[0]), ",".join(map(str, cores[1:]))
    lua = Path(tempfile.mkdtemp()) / "post.lua"
    lua.write_text(
        f"wrk.method = 'POST'\nwrk.body = '{BODY}'\nwrk.headers['Content-Type'] = 'application/json'\n"
    )
    backend_port = free_port()
    backend = _start([sys.executable, __file__, "--serve", "backend", "--port", str(backend_port)], rest)
    results: dict[str, tuple[float, str]] = {}
    try:
        _wait_port(backend_port)
        results["backend (no proxy)"] = _wrk(backend_port, args.seconds, args.connections, rest, lua)
        for kind in args.only or CANDIDATES:
            port = free_port()
            if kind == "tandem":
                cmd = [
                    sys.executable,
                    "-m",
                    "tandem.cli",
                    "router",
                    "--port",
                    str(port),
                    "--host",
                    "127.0.0.1",
                    "--static-decode",
                    f"http://127.0.0.1:{backend_port}",
                    "--served-model",
                    "m",
                    "--scrape-interval",
                    "0",
                ]
            else:
                cmd = [
                    sys.executable,
                    __file__,
                    "--serve",
                    kind,
                    "--port",
                    str(port),
                    "--backend-port",
                    str(backend_port),
                ]
            proxy = _start(cmd, proxy_cpu)
            try:
                _wait_port(port)
                _wrk(port, 1, args.connections, rest, lua)  # warm-up
                results[kind] = _wrk(port, args.seconds, args.connections, rest, lua)
            finally:
                _stop(proxy)
    finally:
        _stop(backend)
        shutil.rmtree(lua.parent)
    base = results.get("aiohttp-web", (0.0, ""))[0]
    print(f"{'candidate':<22}{'req/s':>10}{'p50':>10}{'vs aiohttp-web':>16}")
    for name, (rps, p50) in results.items():
        ratio = f"{rps / base:.2f}" if base else "-"
        print(f"{name:<22}{rps:>10.0f}{p50:>10}{ratio:>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
