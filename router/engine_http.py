"""A lean HTTP/1.1 client for the data path: POSTs to engines over keep-alive connections.

Why not aiohttp here: profiled under load (benchmarks/router), aiohttp's client took about 37% of
the router's CPU per request -- request and response objects, header multidicts, URL parsing, a
writer task per request. This client does what the data path needs and no more: one write per
request, httptools (llhttp, already uvicorn's parser) for the answer, bodies handed over as they
arrive. Engine health probes and metric scrapes stay on aiohttp (monitor.py): they are not on the
request path.

Keep-alive: an idle connection is reused only within `keepalive_s` (4 s: vLLM closes idle
connections after 5 s, so the router never sends on one the engine is closing) and closed when
found older. Nothing is retried here: a failure raises `EngineConnectionError` (an OSError) from
`post` when it comes before the answer's head, from reading the body after.

Timeouts, per exchange (`Timeouts`): the connection must open within `connect_s`; the answer's
body must begin within `first_byte_s` of the request (vLLM sends a stream's head at once and its
first event with the first token; a whole answer's head and body only once it is complete); after
that the engine may fall silent for at most `idle_s` (not counted while the router itself stopped
reading, for a slow client). A timeout closes the connection (the engine aborts the request) and
raises `EngineSilentError`. One watchdog per client checks every exchange in progress each tick (a
quarter of the shortest timeout it was given, at most a second): a timeout fires up to a tick
late, and an exchange costs no timer of its own, a chunk only a counter.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import httptools

from tandem.router.tracing import engine_headers

# Above this many unread body bytes the connection stops reading (the client is slow): TCP
# backpressure reaches the engine instead of the router buffering its answer.
_HIGH_WATER = 256 * 1024
_MAX_TICK_S = 1.0  # the watchdog's longest tick
_MIN_TICK_S = 0.01
_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding"})


class EngineConnectionError(OSError):
    """The connection failed or the engine broke the HTTP exchange."""


class EngineSilentError(EngineConnectionError):
    """The engine sent nothing within its time (`Timeouts`): the connection was closed."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long one exchange may wait on the engine, in seconds."""

    connect_s: float  # to open a connection
    first_byte_s: float  # from the request to the first byte of the answer's body
    idle_s: float  # silence after that
    tick_s: float = field(init=False, repr=False, compare=False)  # how often the watchdog must look

    def __post_init__(self) -> None:
        tick = min(self.first_byte_s, self.idle_s) / 4
        object.__setattr__(self, "tick_s", min(max(tick, _MIN_TICK_S), _MAX_TICK_S))


class EngineResponse:
    """An answer whose status line and headers are in; its body arrives as the engine sends it.
    Give the connection back with `release()` (reused once the body is complete) or `close()`."""

    __slots__ = ("_buffered", "_chunks", "_complete", "_connection", "_error", "_loop", "_waiter", "status")

    def __init__(self, connection: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        self._connection: _Connection | None = connection
        self._loop = loop
        self.status = 0
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._error: EngineConnectionError | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def read(self) -> bytes:
        """The whole body."""
        while not self._complete:
            await self._wait()
        return self._take()

    async def first(self) -> bytes:
        """The body's first bytes, once there are any (b"" for an empty body)."""
        while not self._chunks and not self._complete:
            await self._wait()
        return self._take() if self._chunks else b""

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it comes: each item is all that arrived since the last one."""
        while True:
            if self._chunks:
                yield self._take()
            elif self._complete:
                return
            else:
                await self._wait()

    def release(self) -> None:
        """Done with the answer: its connection goes back to the pool if the exchange finished
        cleanly, else it closes."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.finished(reusable=self._complete and self._error is None)

    def close(self) -> None:
        """Close the connection now (the engine sees the client leave and aborts its work)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.finished(reusable=False)

    def _take(self) -> bytes:
        data = self._chunks.popleft() if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._buffered = 0
        if self._connection is not None:
            self._connection.resume()
        return data

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self._loop.create_future() if self._waiter is None else self._waiter
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None and not self._chunks:
            raise self._error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # Fed by the connection.

    def _feed(self, data: bytes) -> bool:
        """Returns whether the connection should pause reading."""
        self._chunks.append(data)
        self._buffered += len(data)
        self._wake()
        return self._buffered > _HIGH_WATER

    def _finish(self) -> None:
        self._complete = True
        self._wake()

    def _fail(self, error: EngineConnectionError) -> None:
        if not self._complete:
            self._error = error
            self._wake()


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an engine, carrying one exchange at a time."""

    def __init__(
        self,
        pool: deque[_Connection],
        live: set[_Connection],
        watchdog: _Watchdog,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._pool = pool  # where it waits while idle
        self._live = live  # every open connection of the client
        self._watchdog = watchdog
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self._response: EngineResponse | None = None
        self._head: asyncio.Future[None] | None = None
        self._framed = False
        self._keep_alive = False
        self._paused = False
        self.idle_since = 0.0
        # What the watchdog reads: the exchange's limits, and the body's pieces so far.
        self._timeouts: Timeouts | None = None
        self._first_byte_due = 0.0
        self._pieces = 0
        self._pieces_seen = 0  # at the watchdog's last look
        self._quiet_since = 0.0  # when it last saw new pieces

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without subclassing it
        self._live.add(self)

    def data_received(self, data: bytes) -> None:
        if self._response is None:  # bytes nobody asked for: the stream is out of step
            self._abort(EngineConnectionError("engine sent data outside an exchange"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._abort(EngineConnectionError(f"invalid HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None  # an idle one stays in its pool until taken or trimmed
        self._live.discard(self)
        self._watchdog.unwatch(self)
        response = self._response
        if response is None:
            return
        if self._head is not None:  # nothing came back
            self._fail_head(EngineConnectionError(f"connection closed before the answer: {exc!r}"))
        elif not self._framed and not response._complete:  # a body delimited by the close
            response._finish()
        else:
            response._fail(EngineConnectionError(f"connection closed mid-answer: {exc!r}"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in _FRAMING_HEADERS:
            self._framed = True

    def on_headers_complete(self) -> None:
        assert self._response is not None
        self._response.status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        assert self._response is not None
        self._pieces += 1
        if self._response._feed(body) and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        assert self._response is not None
        self._response._finish()

    # The exchange

    async def exchange(self, request: bytes, timeouts: Timeouts) -> EngineResponse:
        """Send a request and wait for the answer's head."""
        assert self.transport is not None and self._response is None
        response = self._response = EngineResponse(self, self._loop)
        self._head = self._loop.create_future()
        self._framed = False
        self._timeouts = timeouts
        self._first_byte_due = self._loop.time() + timeouts.first_byte_s
        self._pieces = self._pieces_seen = 0
        self._watchdog.watch(self, timeouts.tick_s)
        self.transport.write(request)
        try:
            await self._head
        except BaseException:
            response.close()
            raise
        return response

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def finished(self, *, reusable: bool) -> None:
        """The exchange's owner let go of it."""
        self._watchdog.unwatch(self)
        self._response = None
        self._head = None
        if reusable and self._keep_alive and self.transport is not None and not self.transport.is_closing():
            self.resume()
            self.idle_since = time.monotonic()
            self._pool.append(self)
        elif self.transport is not None:
            self.transport.close()

    def hang_up(self) -> None:
        if self.transport is not None:
            self.transport.close()  # connection_lost fails an exchange in progress

    def check(self, now: float) -> None:
        """The watchdog's look at the exchange in progress."""
        response, timeouts = self._response, self._timeouts
        if response is None or timeouts is None or response._complete or response._error is not None:
            self._watchdog.unwatch(self)
        elif not self._pieces:
            if now >= self._first_byte_due:
                self._abort(EngineSilentError(f"no answer within {timeouts.first_byte_s:g} s"))
        elif self._pieces != self._pieces_seen or self._paused:  # the router's own pause: a slow client
            self._pieces_seen = self._pieces
            self._quiet_since = now
        elif now - self._quiet_since >= timeouts.idle_s:
            self._abort(EngineSilentError(f"silent for {timeouts.idle_s:g} s"))

    def _fail_head(self, error: EngineConnectionError) -> None:
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_exception(error)

    def _abort(self, error: EngineConnectionError) -> None:
        if self._head is not None:
            self._fail_head(error)
        elif self._response is not None:
            self._response._fail(error)
        if self.transport is not None:
            self.transport.abort()


class _Watchdog:
    """Looks at every exchange in progress once a tick; no timer runs while there is none."""

    def __init__(self) -> None:
        self._watched: set[_Connection] = set()
        self._tick_s = _MAX_TICK_S
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, connection: _Connection, tick_s: float) -> None:
        self._watched.add(connection)
        if tick_s < self._tick_s:
            self._tick_s = tick_s
        if self._timer is None:
            self._loop = connection._loop
            self._timer = self._loop.call_later(self._tick_s, self._look)

    def unwatch(self, connection: _Connection) -> None:
        self._watched.discard(connection)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _look(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for connection in list(self._watched):
            connection.check(now)
        self._timer = self._loop.call_later(self._tick_s, self._look) if self._watched else None


class EngineClient:
    def __init__(self, *, keepalive_s: float = 4.0) -> None:
        self._keepalive_s = keepalive_s
        self._watchdog = _Watchdog()
        self._pools: dict[str, deque[_Connection]] = {}  # idle connections per engine, oldest first
        self._live: set[_Connection] = set()
        self._heads: dict[tuple[str, str], bytes] = {}  # request line and fixed headers
        self._origins: dict[str, _Origin] = {}

    async def post(
        self, url: str, path: str, body: bytes, request_id: str, timeouts: Timeouts
    ) -> EngineResponse:
        """POST a JSON body to `url` + `path` (url: the engine's http(s)://HOST:PORT); returns once
        the answer's head is in."""
        head = self._heads.get((url, path))
        if head is None:
            head = self._heads[(url, path)] = _request_head(url, path)
        # One buffer, one write: a copy of a prompt costs less than writev's system call.
        request = b"%s%sX-Request-Id: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            head,
            engine_headers(),  # the W3C traceparent of the step it is made in, when traced
            request_id.encode(),
            len(body),
            body,
        )
        connection = self._idle(url) or await self._connect(url, timeouts.connect_s)
        return await connection.exchange(request, timeouts)

    async def close(self) -> None:
        """Close every connection; answers still being read fail (as when an engine goes away)."""
        for connection in list(self._live):
            connection.hang_up()
        self._pools.clear()
        self._watchdog.stop()

    def _idle(self, url: str) -> _Connection | None:
        pool = self._pools.get(url)
        if not pool:
            return None
        cutoff = time.monotonic() - self._keepalive_s
        while pool and (pool[0].idle_since <= cutoff or pool[0].transport is None):
            pool.popleft().finished(reusable=False)  # expired, or closed by the engine
        while pool:
            connection = pool.pop()  # the most recently used
            if connection.transport is not None and not connection.transport.is_closing():
                return connection
        return None

    async def _connect(self, url: str, timeout_s: float) -> _Connection:
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = _Origin.of(url)
        pool = self._pools.setdefault(url, deque())
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(pool, self._live, self._watchdog, loop),
                    origin.host,
                    origin.port,
                    ssl=origin.tls,
                )
        except OSError as exc:  # TimeoutError included
            raise EngineConnectionError(f"cannot connect: {exc!r}") from exc
        return connection


@dataclass(frozen=True, slots=True)
class _Origin:
    host: str
    port: int
    tls: ssl.SSLContext | None

    @staticmethod
    def of(url: str) -> _Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EngineConnectionError(f"engine URL must be http(s)://HOST:PORT, not {url!r}")
        if parts.scheme == "https":
            return _Origin(parts.hostname, parts.port or 443, ssl.create_default_context())
        return _Origin(parts.hostname, parts.port or 80, None)


def _request_head(url: str, path: str) -> bytes:
    host = urlsplit(url).netloc
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tandem-router\r\n"
        "Content-Type: application/json\r\nAccept: */*\r\n"
    ).encode()
