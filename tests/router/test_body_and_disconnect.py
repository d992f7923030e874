"""A request body that arrives in several ASGI messages reaches the handler whole, and a client
that leaves afterwards still cancels the work (the disconnect watch must not steal body parts)."""

from __future__ import annotations

import asyncio

from tandem.router.asgi import Message, Receive, read_body, until_disconnect

SCOPE = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": []}


def client(messages: list[Message], leave: asyncio.Event | None = None) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            await asyncio.sleep(0)  # let the other reader, if any, run between parts
            return queue.pop(0)
        if leave is not None:
            await leave.wait()
        else:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    return receive


async def test_body_in_many_parts_is_read_whole() -> None:
    parts: list[Message] = [{"type": "http.request", "body": b'{"prompt": ', "more_body": True}]
    parts += [{"type": "http.request", "body": b'"x' * 50, "more_body": True}]
    parts += [{"type": "http.request", "body": b'"}', "more_body": False}]
    bodies: list[bytes] = []

    async def work(receive: Receive) -> None:
        bodies.append(await read_body(SCOPE, receive, limit=1 << 20))

    await until_disconnect(work, client(parts), asyncio.get_running_loop())
    assert bodies == [b'{"prompt": ' + b'"x' * 50 + b'"}']


async def test_client_leaving_after_the_body_cancels_the_work() -> None:
    leave = asyncio.Event()
    reached: list[str] = []

    async def work(receive: Receive) -> None:
        await read_body(SCOPE, receive, limit=1024)
        reached.append("body")
        leave.set()
        await asyncio.sleep(10)  # a long stream the client abandons
        reached.append("finished")

    request = [{"type": "http.request", "body": b"{}", "more_body": False}]
    await asyncio.wait_for(until_disconnect(work, client(request, leave), asyncio.get_running_loop()), 5)
    assert reached == ["body"]
