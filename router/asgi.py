"""The few ASGI pieces the router needs, without a framework on the data path.

Why raw ASGI on uvicorn (uvloop + httptools): measured with benchmarks/router_http_stack.py (one
proxy core, 64 connections, wrk, canned backend) on the project's 2-core machine, a pass-through
proxy served 7.3-8.5k req/s this way against 6.3-6.9k for aiohttp.web with the same client
(+15-23%); the task's own figures put Starlette on the same server at 6.6k. Raw ASGI also lets
tests drive the app in-process. The client side is engine_http.py, not aiohttp: most of a 2.1-2.4x
gain in the router's req/s per core (benchmarks/router/README.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from tandem.router.errors import PayloadTooLargeError, RouterError
from tandem.router.reply import Reply

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (name in lower case)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class ClientDisconnectedError(Exception):
    """The client left before it sent the whole body: nobody is left to answer."""


# Set in the scope by the server when it answered the request itself (server.py: the body came too
# slowly): the app, which then sees the client leave, has nothing to add.
ANSWERED_BY_SERVER = "tandem.answered_by_server"
# Set in the scope by the router's server (server.py): called with a function, it calls that
# function if the client leaves before the answer is complete (until_disconnect's `watch`).
ON_DISCONNECT = "tandem.on_disconnect"


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body, at most `limit` bytes (else 413). How long it may take is the server's to
    limit (server.py), at no cost to the bodies that come whole."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"Request body over {limit} bytes.", code="body_too_large")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"Request body over {limit} bytes.", code="body_too_large")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def error_reply(error: RouterError, request_id: str | None = None) -> Reply:
    headers = error.headers()
    if request_id:
        headers["X-Request-Id"] = request_id
    return Reply(error.status, body=error.body(), headers=headers)


async def send_reply(send: Send, reply: Reply) -> None:
    headers = [(b"content-type", reply.content_type.encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in reply.headers.items()]
    if reply.stream is None:
        headers.append((b"content-length", str(len(reply.body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        return
    headers.append((b"cache-control", b"no-cache"))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    try:
        async for chunk in reply.stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        await reply.stream.aclose()  # type: ignore[attr-defined]
    await send({"type": "http.response.body", "body": b""})


async def until_disconnect(
    work: Callable[[Receive], Awaitable[None]],
    receive: Receive,
    loop: asyncio.AbstractEventLoop,
    watch: Callable[[Callable[[], None]], None] | None = None,
) -> bool:
    """Run `work(receive)` (answering the request, streaming included) unless the client leaves
    first: then cancel it, which closes the backend connections and so aborts the engines' work.
    Returns whether the client left (mid-body, when `work` raises ClientDisconnectedError, or after).
    The watch starts only once `work` has read the whole body: two readers of `receive` would
    split a body that arrives in several messages between them. (It starts then, from the last
    body message, rather than waiting on an event from the start: one task step, one event and
    its future less per request.) `loop` is the running loop, passed in: on Python 3.11 each
    lookup of it is a getpid() system call.

    `watch` is the server's own hook, where it has one (`ON_DISCONNECT`, server.py): it calls
    what it is given when the client leaves, and no task waits on `receive` for that. Without
    one, a task does."""
    current = asyncio.current_task(loop)
    assert current is not None
    finished = left = armed = False
    watcher: asyncio.Task[None] | None = None

    def client_left() -> None:
        nonlocal left
        if not finished:
            left = True
            current.cancel()

    def watcher_done(watcher: asyncio.Task[None]) -> None:
        if not watcher.cancelled():
            client_left()

    async def receive_body() -> Message:
        nonlocal watcher, armed
        message = await receive()
        if not armed and (message["type"] != "http.request" or not message.get("more_body")):
            armed = True
            if watch is not None:
                watch(client_left)
            else:
                watcher = loop.create_task(_disconnected(receive))
                watcher.add_done_callback(watcher_done)
        return message

    try:
        await work(receive_body)
        return False
    except ClientDisconnectedError:
        return True
    except asyncio.CancelledError:
        if not (left and current.cancelling() == 1):
            raise  # cancelled from outside (shutdown), not (only) by the client leaving
        current.uncancel()
        return True
    finally:
        finished = True
        if watcher is not None:
            watcher.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
