"""A request body that arrives in several ASGI messages reaches the handler whole, and a client
that leaves afterwards still cancels the work (the disconnect watch must not steal body parts)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

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


async def test_with_the_servers_hook_the_client_leaving_cancels_the_work_without_a_task() -> None:
    """The router's server calls what until_disconnect gives it (ON_DISCONNECT) when the client
    leaves: the work is cancelled as before, and no task waited on `receive` for it."""
    hooks: list[Callable[[], None]] = []
    reached: list[str] = []
    loop = asyncio.get_running_loop()

    async def work(receive: Receive) -> None:
        await read_body(SCOPE, receive, limit=1024)
        reached.append("body")
        assert len(hooks) == 1  # armed once the body is whole
        loop.call_soon(hooks[0])  # the connection is lost
        await asyncio.sleep(10)
        reached.append("finished")

    tasks = len(asyncio.all_tasks())
    request = [{"type": "http.request", "body": b"{}", "more_body": False}]
    left = await asyncio.wait_for(until_disconnect(work, client(request), loop, hooks.append), 5)
    assert (left, reached) == (True, ["body"])
    assert len(asyncio.all_tasks()) == tasks


async def test_the_servers_hook_called_after_the_answer_changes_nothing() -> None:
    hooks: list[Callable[[], None]] = []

    async def work(receive: Receive) -> None:
        await read_body(SCOPE, receive, limit=1024)

    request = [{"type": "http.request", "body": b"{}", "more_body": False}]
    left = await until_disconnect(work, client(request), asyncio.get_running_loop(), hooks.append)
    hooks[0]()  # the connection closes after a complete answer
    await asyncio.sleep(0)
    assert left is False
    assert not asyncio.current_task().cancelling()  # type: ignore[union-attr]
