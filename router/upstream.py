"""Calls to engines, with failures translated to router errors.

The data path (completions, /tokenize) goes through `EngineClient`, a lean keep-alive HTTP/1.1
client (engine_client.py says why); the monitor's scrapes and probes use the aiohttp session made
here, off the request path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec

from tandem.router.engine_client import EngineClient, EngineResponse
from tandem.router.errors import BackendError, BackendUnreachableError, EngineRejectedError, RouterError
from tandem.router.sse import error_event

log = logging.getLogger(__name__)


def new_session(connect_timeout_s: float) -> aiohttp.ClientSession:
    """The monitor's client. Idle connections close after 4 s: vLLM's keep-alive is 5 s, so it never
    reuses one the engine is closing."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0, enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False)


class Upstream:
    def __init__(self, client: EngineClient, *, control_timeout_s: float) -> None:
        self.client = client
        self._control_timeout_s = control_timeout_s

    async def open(self, url: str, path: str, body: bytes, request_id: str) -> EngineResponse:
        """POST and return once the engine's status line and headers are in. Raises
        BackendUnreachableError when they never come or say 503 (retry elsewhere), else
        EngineRejectedError (4xx, the client's fault) or BackendError (5xx)."""
        try:
            resp = await self.client.post(url, path, body, request_id)
        except OSError as exc:  # EngineConnectionError and timeouts
            raise BackendUnreachableError(url, repr(exc)) from exc
        if resp.status < 400:
            return resp
        try:
            payload = await resp.read()
        except OSError:
            payload = b""
        finally:
            resp.release()
        if resp.status == 503:  # the engine says it cannot serve (unhealthy, overloaded): try another
            raise BackendUnreachableError(url, "answered 503")
        if resp.status < 500:
            raise EngineRejectedError(resp.status, payload)
        raise BackendError(f"Engine {url} answered {resp.status}", code="engine_error")

    async def read(self, resp: EngineResponse, url: str) -> bytes:
        """The whole body of an opened response; a break is a BackendError."""
        try:
            return await resp.read()
        except OSError as exc:
            raise BackendError(f"Engine {url} broke off its answer: {exc!r}", code="engine_broke") from exc
        finally:
            resp.release()

    async def post_json(self, url: str, path: str, payload: Any, request_id: str) -> dict[str, Any]:
        resp = await self.open(url, path, msgspec.json.encode(payload), request_id)
        return decode_object(await self.read(resp, url), url)

    async def control(self, url: str, path: str, payload: Any, request_id: str) -> dict[str, Any]:
        """A short call (/tokenize) under the control timeout."""
        try:
            async with asyncio.timeout(self._control_timeout_s):
                return await self.post_json(url, path, payload, request_id)
        except TimeoutError as exc:
            raise BackendUnreachableError(url, f"{path} timed out") from exc


def decode_object(raw: bytes, url: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BackendError(f"Engine {url} answered with invalid JSON", code="engine_error") from exc
    if not isinstance(value, dict):
        raise BackendError(f"Engine {url} answered with a non-object", code="engine_error")
    return value


async def relay(
    resp: EngineResponse, url: str, on_break: Callable[[RouterError], None]
) -> AsyncIterator[bytes]:
    """The engine's stream as it comes; a break mid-stream ends it with one error event. Closing the
    generator early (the client left) closes the connection, which makes the engine abort."""
    finished = False
    try:
        async for chunk in resp.iter_chunks():
            yield chunk
        finished = True
    except OSError as exc:
        log.warning("stream from %s broke: %r", url, exc)
        error = BackendError(f"Engine {url} broke off the stream", code="engine_broke")
        on_break(error)
        yield error_event(error)
    finally:
        if finished:
            resp.release()
        else:
            resp.close()
