"""A client that disconnects is one INFO line in the router's log: before, each one that left
mid-body logged a 17-line `Exception in ASGI application` traceback at ERROR (read_body raised
CancelledError out of the app)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from http_wire import connect, read_to_close
from router_support import (
    MODEL,
    Addresses,
    Engine,
    direct_router_settings,
    engines_running,
    router_running,
)

from tandem.router.settings import RouterSettings

pytestmark = pytest.mark.slow
SHUTDOWN_MESSAGES = ("Shutting down", "Waiting for application shutdown", "Application shutdown", "Finished")


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with engines_running([(Addresses().take(), ([], {}))]) as engines:
        yield engines[0]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.arrived = asyncio.Event()  # the router logs from this loop: no thread to cross

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.arrived.set()

    def lines(self) -> list[str]:
        """Each record as the log shows it, its message and its traceback's lines, if any; the
        server's own shutdown messages left out."""
        out = []
        for record in self.records:
            if record.getMessage().startswith(SHUTDOWN_MESSAGES):
                continue
            out.append(record.getMessage())
            if record.exc_info:
                out += logging.Formatter().formatException(record.exc_info).splitlines()
        return out


@contextlib.asynccontextmanager
async def logged_router(settings: RouterSettings) -> AsyncIterator[tuple[str, Records]]:
    """A router in-process, and what it and its server log until it has shut down (all its
    requests done). uvicorn's loggers do not propagate to the root one, so caplog would miss them;
    and uvicorn's log config clears their handlers when the server is made, so ours go on after."""
    handler = Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "tandem")]
    levels = [logger.level for logger in loggers]
    try:
        async with router_running(settings) as url:
            for logger in loggers:
                logger.addHandler(handler)
                logger.setLevel(logging.INFO)
            yield url, handler
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


async def until_logged(records: Records, fragment: str) -> None:
    async with asyncio.timeout(20):
        while not any(fragment in line for line in records.lines()):
            records.arrived.clear()
            await records.arrived.wait()


def settings_for(engine: Engine, **overrides: float) -> RouterSettings:
    return direct_router_settings(engine.url, **overrides)


@pytest.mark.parametrize("after_bytes", [0, 11])
async def test_leaving_mid_body_is_one_info_line(engine: Engine, after_bytes: int) -> None:
    async with logged_router(settings_for(engine)) as (url, log):
        _, writer = await connect(url)
        body = b'{"prompt": "Say hello."}'[:after_bytes]
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: r\r\nX-Request-Id: leaver\r\n"
            b"Content-Length: 100\r\n\r\n" + body
        )
        await writer.drain()
        writer.close()
        await until_logged(log, "leaver")
    assert log.lines() == ["request leaver: the client disconnected before the answer was complete"]
    assert all(record.levelno == logging.INFO for record in log.records)


async def test_leaving_mid_stream_is_one_info_line(engine: Engine) -> None:
    async with logged_router(settings_for(engine)) as (url, log):
        reader, writer = await connect(url)
        body = json.dumps({"model": MODEL, "prompt": "Hi", "max_tokens": 5000, "stream": True}).encode()
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: r\r\nX-Request-Id: streamer\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        assert (await reader.readuntil(b"data: ")).startswith(b"HTTP/1.1 200")
        writer.close()
        await until_logged(log, "streamer")
    assert log.lines() == ["request streamer: the client disconnected before the answer was complete"]


async def test_a_body_too_slow_is_one_info_line_the_refusal(engine: Engine) -> None:
    """The server answers 408 and the app sees the client go: only the refusal is logged."""
    async with logged_router(settings_for(engine, body_timeout_s=0.2)) as (url, log):
        reader, writer = await connect(url)
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: r\r\nContent-Length: 100\r\n\r\n{")
        assert (await read_to_close(reader)).startswith(b"HTTP/1.1 408")
        writer.close()
        await until_logged(log, "408")
    assert len(log.lines()) == 1 and log.lines()[0].endswith("408 body_timeout")
