"""The router's HTTP server: uvicorn on uvloop and httptools, with the edge limits uvicorn lacks.

What uvicorn 0.54 limits by itself (read from `uvicorn/protocols/http/`): with httptools, nothing
of the request head -- llhttp buffers headers of any size and number (a 20 MB header, 100k
headers: served) -- and no timer runs from a connection's opening to its first response:
`timeout_keep_alive` only closes connections idle *between* requests, so a client may take
forever over its head, or its body. With h11, `h11_max_incomplete_event_size` (16 KiB) bounds only
a head still incomplete (a 20 KB head read in one piece is served), the answer is a 400 in
text/plain (not h11's 431 hint), and nothing bounds the count; h11 is also the slower parser
(asgi.py has the measurements). `limit_concurrency` answers 503 in text/plain.

So the router keeps httptools and its protocol here adds, per connection:

- at most `max_header_count` headers and `max_header_bytes` of request line and headers, else 431
  (414 when the URL alone is over);
- the head complete within `header_timeout_s` of its first byte (of the connection's opening, for
  the first request), else 408, or a plain close when nothing of a request came; the body within
  `body_timeout_s` of the head, else 408 (the app, which then sees the client leave, is told by
  ANSWERED_BY_SERVER in the scope);
- OpenAI-style JSON for these and for uvicorn's 400 on a malformed request. The refusal is
  written, the sending side shut, and what the client still sends read and dropped for a moment
  (LINGER_S), so a client busy sending its huge head still reads the answer rather than a reset;
- an answer's head written with its first body bytes (`OneWriteCycle`, HTTP/1.1): uvicorn writes
  the head alone as soon as the app starts the answer, a system call more per request;
- the client's leaving told to the app (`ON_DISCONNECT` in the scope, `OneWriteCycle.watch`), so
  the app needs no task per request waiting on `receive()` for it (asgi.until_disconnect);
- for HTTP/1.0 clients, which cannot read chunked framing (RFC 9112 §6.1: "A server MUST NOT send
  a response containing Transfer-Encoding unless the corresponding request indicates HTTP/1.1"),
  a body of unknown length (a stream) delimited by closing the connection, as RFC 9112 §6.3 allows.

A timer runs only while a head or a body is incomplete at the end of a read: a request that
arrives whole costs none (an asyncio.timeout in the app cost 7 µs a request).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httptools
import uvicorn
from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.server import ServerState

from tandem.router.asgi import ANSWERED_BY_SERVER, ON_DISCONNECT
from tandem.router.errors import (
    BadRequestError,
    HeadersTooLargeError,
    RequestTimeoutError,
    RouterError,
    UriTooLongError,
)
from tandem.router.reply import JSON_CONTENT_TYPE
from tandem.router.settings import RouterSettings

log = logging.getLogger(__name__)

LINGER_S = 2.0  # after a refusal, how long what the client still sends is read and dropped
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_FRAMING_OR_CONNECTION = _FRAMING | {b"connection"}


class RouterServerConfig(uvicorn.Config):
    """uvicorn's configuration, carrying the router settings its protocol reads its limits from."""

    def __init__(self, app: Any, settings: RouterSettings, **kwargs: Any) -> None:
        super().__init__(app, http=EdgeProtocol, **kwargs)
        self.router_settings = settings


def server_config(app: Any, settings: RouterSettings, *, log_level: str) -> RouterServerConfig:
    """How the router is served, by `tandem router` and by the tests alike."""
    return RouterServerConfig(
        app,
        settings,
        host=settings.listen_host(),
        port=settings.port,
        loop="uvloop",
        ws="none",
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
        backlog=2048,
    )


class _Refusal(Exception):  # noqa: N818 -- not an error: how a parser callback stops the parse
    def __init__(self, error: RouterError) -> None:
        self.error = error


class EdgeProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        assert isinstance(config, RouterServerConfig)
        self._settings = settings = config.router_settings
        self._max_header_count, self._max_header_bytes = settings.max_header_count, settings.max_header_bytes
        self._in_head = False  # between a request's first byte and its last header
        self._in_body = False  # between its last header and the end of its body
        # The head's size is counted only where a read could hold more of it than the limit. While
        # it is incomplete, the reads that were head from end to end bound what llhttp buffers (a
        # header still incomplete sits there, unseen); once complete, it is at most those reads and
        # the last one, and only above the limit is it summed exactly from the parsed headers.
        self._head_reads_bytes = 0
        self._read_bytes = 0  # of the read being parsed
        self._began_in_read = False
        # One timer at a time: for the head, then for the body. Armed only while one is incomplete
        # at the end of a read, so a request that arrives whole costs no timer.
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._settings.header_timeout_s)  # the first head is due from the opening

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        if self.cycle is not None and self.cycle.disconnected:
            _client_left(self.cycle)

    # Parser callbacks (the base class's called directly: they run for every request)

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._in_head = self._began_in_read = True
        self._head_reads_bytes = 0

    def on_headers_complete(self) -> None:
        if len(self.headers) > self._max_header_count or (
            self._head_reads_bytes + self._read_bytes > self._max_header_bytes
            and len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            > self._max_header_bytes
        ):
            raise _Refusal(self._oversized())
        self._in_head, self._in_body = False, True
        if self._timer is not None:
            self._disarm()
        HttpToolsProtocol.on_headers_complete(self)
        if self.scope["http_version"] == "1.0":
            self.cycle.__class__ = CloseDelimitedCycle
        else:
            cycle = self.cycle
            cycle.__class__ = OneWriteCycle
            cycle.loop = self.loop  # type: ignore[attr-defined]
            self.scope[ON_DISCONNECT] = cycle.watch  # type: ignore[attr-defined, literal-required]

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._timer is not None:
            self._disarm()
        HttpToolsProtocol.on_message_complete(self)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: dropped
        self._unset_keepalive_if_required()
        self._began_in_read, self._read_bytes = False, len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            # Raised in a callback: one of ours, or uvicorn's on a URL it cannot decode.
            refusal = exc.__context__
            self._refuse(refusal.error if isinstance(refusal, _Refusal) else _malformed())
            return
        except httptools.HttpParserError:
            self._refuse(_malformed())
            return
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()  # no WebSocket here (ws="none"): served as plain HTTP
        if self._in_head:
            if not self._began_in_read:  # head from end to end
                self._head_reads_bytes += len(data)
            if self._head_reads_bytes > self._max_header_bytes or len(self.headers) > self._max_header_count:
                self._refuse(self._oversized())
                return
        if self._timer is None and self._in_head:
            self._arm(self._settings.header_timeout_s)
        elif self._timer is None and self._in_body:
            self._arm(self._settings.body_timeout_s)

    def _oversized(self) -> RouterError:
        if len(self.headers) > self._max_header_count:
            count = self._max_header_count
            return HeadersTooLargeError(f"More than {count} headers.", code="too_many_headers")
        if len(self.url) > self._max_header_bytes:
            return UriTooLongError(f"URL over {self._max_header_bytes} bytes.", code="uri_too_long")
        return HeadersTooLargeError(
            f"Request line and headers over {self._max_header_bytes} bytes.", code="headers_too_large"
        )

    # Time

    def _arm(self, seconds: float) -> None:
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if self._in_head:
            timeout = self._settings.header_timeout_s
            self._refuse(
                RequestTimeoutError(f"Request head not complete within {timeout:g} s.", code="header_timeout")
            )
        elif self._in_body:
            self._body_timed_out()
        elif not self.transport.is_closing():
            self.transport.close()  # a new connection that sent nothing: nobody to answer

    def _body_timed_out(self) -> None:
        cycle = self.cycle
        if any(queued is cycle for queued, _ in self.pipeline):
            # Pipelined behind another request, whose answer holds the reading: not the client's doing.
            self._arm(self._settings.body_timeout_s)
            return
        self._refused = True
        timeout = self._settings.body_timeout_s
        error = RequestTimeoutError(f"Request body not complete within {timeout:g} s.", code="body_timeout")
        log.info("refused a request from %s: %d %s", _address(self.client), error.status, error.code)
        if cycle.response_started:  # the app answered without the whole body (a 401, a 413)
            cycle.keep_alive = False
            if cycle.response_complete:
                self.transport.close()
            return
        cycle.scope[ANSWERED_BY_SERVER] = True  # type: ignore[literal-required]
        cycle.disconnected = True  # the app's receive() now says the client left; its sends go nowhere
        cycle.message_event.set()
        _client_left(cycle)
        self._answer(error)

    # Answers the app never sees

    def _refuse(self, error: RouterError) -> None:
        """Answer `error` and close. Behind a request still being answered (pipelining), no answer
        can be slotted in: that one is completed, then the connection closes."""
        self._refused = True
        self._disarm()
        log.info("refused a request from %s: %d %s", _address(self.client), error.status, error.code)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            return
        self._answer(error)

    def _answer(self, error: RouterError) -> None:
        body = error.body()
        head = [STATUS_LINE[error.status]]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: " + JSON_CONTENT_TYPE.encode() + b"\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()  # the answer is all; read and drop what comes for a moment
        self.flow.resume_reading()
        self.loop.call_later(LINGER_S, self.transport.close)


class OneWriteCycle(RequestResponseCycle):
    """The response cycle of an HTTP/1.1 request: the answer's head goes out with its first body
    bytes, in one write (uvicorn writes it alone, as soon as the app starts the answer). A whole
    answer's body follows its head at once (asgi.send_reply); a stream's first event may not, so
    a stream's head goes out at the end of the loop's turn at the latest.

    `send` is uvicorn 0.54's (`httptools_impl.RequestResponseCycle.send`: the same checks, errors,
    framing and keep-alive), written for the one answer in flight: the header names and values are
    each checked in one regular-expression search over them all (the same character classes),
    not two searches a header, and a body message is one formatted write. It runs for every
    message the router sends (about a tenth of the router's bytecodes per request in uvicorn's)."""

    loop: asyncio.AbstractEventLoop  # the protocol's, set with the class
    _head = b""  # held until the first body bytes
    _left: Callable[[], None] | None = None  # called if the client leaves (ON_DISCONNECT)

    def watch(self, left: Callable[[], None]) -> None:
        """The app's hook (ON_DISCONNECT in the scope): `left` is called if the client leaves
        before the answer is complete."""
        self._left = left

    def client_left(self) -> None:
        left, self._left = self._left, None
        if left is not None:
            left()

    async def send(self, message: ASGISendEvent) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{message['type']}'."
                )
            self._start(message["status"], message.get("headers", ()))
        elif not self.response_complete:
            if message["type"] != "http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.body', but got '{message['type']}'."
                )
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(
                f"Unexpected ASGI message '{message['type']}' sent, after response already completed."
            )

    def _start(self, status: int, given: Any) -> None:
        self.response_started = True
        self.waiting_for_100_continue = False
        headers = [*self.default_headers, *given]
        if HEADER_RE.search(b"".join([name for name, _ in headers])):
            raise RuntimeError("Invalid HTTP header name.")
        if HEADER_VALUE_RE.search(b"".join([value for _, value in headers])):
            raise RuntimeError("Invalid HTTP header value.")
        content = [STATUS_LINE[status]]
        close = False
        for name, value in headers:
            name = name.lower()
            if name in _FRAMING_OR_CONNECTION:
                if name == b"content-length":
                    if self.chunked_encoding is None:
                        self.expected_content_length = int(value.decode())
                        self.chunked_encoding = False
                elif name == b"transfer-encoding":
                    if value.lower() == b"chunked":
                        self.expected_content_length = 0
                        self.chunked_encoding = True
                elif b"close" in [token.lower().strip() for token in value.split(b",")]:
                    self.keep_alive = False
                    close = True
            content += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not close:
            content.append(b"connection: close\r\n")
        head_request = self.scope["method"] == "HEAD"
        if self.chunked_encoding is None and not head_request and status not in (204, 304):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        if head_request:  # no body will come
            self.transport.write(b"".join(content))
            return
        self._head = b"".join(content)
        if self.chunked_encoding:
            self.loop.call_soon(self._flush)  # a stream

    def _body(self, body: bytes, more_body: bool) -> None:
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
            data = b""
        elif self.chunked_encoding:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more_body:
                data += b"0\r\n\r\n"
        else:
            if len(body) > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= len(body)
            data = body
        head = self._head
        if head:
            self._head = b""
            data = head + data
        if data:
            self.transport.write(data)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    def _flush(self) -> None:
        head, self._head = self._head, b""
        if head and not self.disconnected:
            self.transport.write(head)


class CloseDelimitedCycle(RequestResponseCycle):
    """The response cycle of an HTTP/1.0 request. uvicorn frames a body of unknown length in chunks
    whatever the request's version; this one sends it bare and closes the connection after it (a
    1.0 request is never kept alive)."""

    _bare = False

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            self._bare = not any(name.lower() in _FRAMING for name, _ in message.get("headers", []))
            if self._bare:
                self.chunked_encoding = False  # uvicorn adds no framing header then
        elif self._bare and message["type"] == "http.response.body" and not self.response_complete:
            await self._send_bare(message.get("body", b""), more=message.get("more_body", False))
            return
        await super().send(message)

    async def _send_bare(self, body: bytes, *, more: bool) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        self.transport.write(body)
        if not more:
            self.response_complete = True
            self.message_event.set()
            self.transport.close()  # what ends the body
            self.on_response()


def _client_left(cycle: RequestResponseCycle) -> None:
    if isinstance(cycle, OneWriteCycle):
        cycle.client_left()


def _malformed() -> BadRequestError:
    return BadRequestError("Invalid HTTP request received.", code="invalid_http")


def _address(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "an unknown client"
