"""Answers that watch for the client leaving: a server-sent-events response as a plain ASGI
callable, and :func:`until_client_leaves` for answers computed before they are sent.

:class:`EventStream` streams the chunks of an async iterator and, like Starlette's
``StreamingResponse``, watches for the client leaving, which stops the source and calls
``on_disconnect`` (the engine aborts the request). Unlike it, a source may raise
:class:`DropConnectionError` to end the response without its final empty chunk: the server then
drops the connection mid-stream, as a crashing engine would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from tandem.sim.openai_protocol import ApiError

_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


class DropConnectionError(Exception):
    """Raised by a chunk source: drop the connection now (an injected fault)."""


class ClientLeftError(ApiError):
    """The client disconnected before its answer was ready."""

    def __init__(self) -> None:
        super().__init__(499, "the client closed the request")


class EventStream:
    def __init__(self, chunks: AsyncIterator[bytes], on_disconnect: Callable[[], None]) -> None:
        self._chunks = chunks
        self._on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
        try:
            completed = await until_client_leaves(receive, self._stream(send), self._on_disconnect)
        except ClientLeftError:
            return
        if completed:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, send: Send) -> bool:
        """Send every chunk; False when the source asked to drop the connection."""
        try:
            async for chunk in self._chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except DropConnectionError:
            return False
        except OSError:
            # The client went away between chunks (uvicorn raises on a send after disconnect).
            self._on_disconnect()
            return False
        return True


async def _client_left(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_client_leaves(receive: Receive, work: Awaitable[Any], on_leave: Callable[[], None]) -> Any:
    """Await ``work``; if the client disconnects first, cancel it, call ``on_leave`` and raise."""
    doing = asyncio.ensure_future(work)
    watching = asyncio.ensure_future(_client_left(receive))
    try:
        await asyncio.wait((doing, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not doing.done():
            doing.cancel()
            on_leave()
        await asyncio.gather(doing, watching, return_exceptions=True)
    if doing.cancelled():
        raise ClientLeftError
    return doing.result()
