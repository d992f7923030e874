"""One call to an engine, its failures translated to router errors (the layer above
`engine_http`, the wire; below `direct_route` and the connectors, which compose calls into routes).

The data path (completions, /tokenize) goes through `EngineClient`, a lean keep-alive HTTP/1.1
client (engine_http.py says why); the monitor's scrapes and probes use the aiohttp session made
here, off the request path.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec

from tandem.router.engine_http import EngineClient, EngineResponse, EngineSilentError, Timeouts
from tandem.router.errors import (
    BackendError,
    BackendUnreachableError,
    EngineRejectedError,
    EngineServerError,
    EngineTimeoutError,
    Failure,
)
from tandem.router.sse import error_event

log = logging.getLogger(__name__)


def new_session() -> aiohttp.ClientSession:
    """The monitor's client (each call gives its own timeout). Idle connections close after 4 s:
    vLLM's keep-alive is 5 s, so it never reuses one the engine is closing."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0, enable_cleanup_closed=True)
    return aiohttp.ClientSession(connector=connector, auto_decompress=False)


class Upstream:
    def __init__(self, client: EngineClient, *, control_timeout_s: float) -> None:
        self.client = client
        self._control_timeout_s = control_timeout_s

    async def open(
        self, url: str, path: str, body: bytes, request_id: str, timeouts: Timeouts
    ) -> EngineResponse:
        """POST and return once the engine's status line and headers are in. Raises
        BackendUnreachableError when they never come or say 503, EngineTimeoutError when they do
        not come in time, EngineServerError for 5xx (all: try another endpoint), else
        EngineRejectedError (4xx, the client's fault)."""
        try:
            resp = await self.client.post(url, path, body, request_id, timeouts)
        except EngineSilentError as exc:
            raise EngineTimeoutError(url, str(exc)) from exc
        except OSError as exc:  # EngineConnectionError, connect timeouts
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
        raise EngineServerError(url, resp.status)

    async def read(self, resp: EngineResponse, url: str) -> bytes:
        """The whole body of an opened response; a break or a timeout is a BackendError."""
        try:
            return await resp.read()
        except OSError as exc:
            raise broken_off(url, exc) from exc
        finally:
            resp.release()

    async def first(self, resp: EngineResponse, url: str) -> bytes:
        """The first bytes of an opened stream's body; before any reached the client, so a break or
        a timeout here is a BackendError that another endpoint may make good."""
        try:
            return await resp.first()
        except OSError as exc:
            resp.close()
            raise broken_off(url, exc) from exc
        except BaseException:
            resp.close()
            raise

    async def post_json(
        self, url: str, path: str, payload: Any, request_id: str, timeouts: Timeouts
    ) -> dict[str, Any]:
        resp = await self.open(url, path, msgspec.json.encode(payload), request_id, timeouts)
        return decode_object(await self.read(resp, url), url)

    async def control(
        self, url: str, path: str, payload: Any, request_id: str, connect_s: float
    ) -> dict[str, Any]:
        """A short call (/tokenize) under the control timeout."""
        limit = self._control_timeout_s
        return await self.post_json(url, path, payload, request_id, Timeouts(connect_s, limit, limit))


def broken_off(url: str, exc: OSError) -> BackendError:
    """What an answer that stopped coming (`exc`) is: an engine that fell silent, or broke it off."""
    if isinstance(exc, EngineSilentError):
        return EngineTimeoutError(url, str(exc))
    return BackendError(
        f"Engine {url} broke off its answer: {exc!r}", code="engine_broke", url=url, failure=Failure.BROKE
    )


def decode_object(raw: bytes, url: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BackendError(
            f"Engine {url} answered with invalid JSON", code="engine_error", url=url, failure=Failure.ERROR
        ) from exc
    if not isinstance(value, dict):
        raise BackendError(
            f"Engine {url} answered with a non-object", code="engine_error", url=url, failure=Failure.ERROR
        )
    return value


async def relay(
    resp: EngineResponse, url: str, on_break: Callable[[BackendError], None], first: bytes = b""
) -> AsyncIterator[bytes]:
    """The engine's stream as it comes, from its `first` bytes (read already, see `Upstream.first`);
    a break or a silence mid-stream ends it with one error event. Closing the generator early (the
    client left) closes the connection, which makes the engine abort."""
    finished = False
    try:
        if first:
            yield first
        async for chunk in resp.iter_chunks():
            yield chunk
        finished = True
    except OSError as exc:
        log.warning("stream from %s broke: %r", url, exc)
        error = broken_off(url, exc)
        on_break(error)
        yield error_event(error)
    finally:
        if finished:
            resp.release()
        else:
            resp.close()
