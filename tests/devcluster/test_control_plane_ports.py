"""Control-plane programs start on free ports; a port taken before the program binds it is retried."""

from __future__ import annotations

import sys
import textwrap
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from tandem.devcluster.controlplane import start_healthy
from tandem.devcluster.errors import DevClusterError

# Fails like a Go server whose port was taken the first time it runs, then serves /health.
FLAKY_SERVER = textwrap.dedent(
    """
    import http.server, pathlib, sys
    marker = pathlib.Path(sys.argv[1])
    if not marker.exists():
        marker.write_text("ran")
        print("listen tcp 127.0.0.1:1: bind: address already in use", flush=True)
        sys.exit(1)
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), Health).serve_forever()
    """
)


async def test_taken_port_is_retried_on_another(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    tried: list[list[int]] = []

    def argv(ports: list[int]) -> list[str]:
        tried.append(ports)
        return [sys.executable, "-c", FLAKY_SERVER, str(marker), str(ports[0])]

    async with aiohttp.ClientSession() as session, AsyncExitStack() as stack:

        async def healthy(port: int) -> bool:
            async with session.get(f"http://127.0.0.1:{port}/health") as response:
                return response.status == 200

        ports = await start_healthy(
            stack, "flaky", tmp_path / "logs", 1, argv, lambda p: lambda: healthy(p[0])
        )
        assert len(tried) == 2
        assert ports == tried[1]
        assert await healthy(ports[0])


async def test_other_failures_are_reported_with_the_log(tmp_path: Path) -> None:
    def argv(ports: list[int]) -> list[str]:
        return [sys.executable, "-c", "print('bad flag --frobnicate'); raise SystemExit(2)"]

    async def never() -> bool:
        return False

    async with AsyncExitStack() as stack:
        with pytest.raises(DevClusterError, match=r"(?s)broken exited with status 2.*bad flag --frobnicate"):
            await start_healthy(stack, "broken", tmp_path / "logs", 1, argv, lambda p: never)
