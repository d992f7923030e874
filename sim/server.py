"""Serve a simulator app with uvicorn, as ``vllm serve`` serves its OpenAI server."""

from __future__ import annotations

import uvicorn

from tandem.sim.app import create_app
from tandem.sim.settings import SimSettings


def serve(settings: SimSettings, *, log_level: str = "info") -> int:
    """Run until SIGINT/SIGTERM; the exit status (non-zero when startup failed, e.g. a port in use)."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        timeout_keep_alive=int(settings.keep_alive_s),
        lifespan="on",
        backlog=4096,
    )
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
