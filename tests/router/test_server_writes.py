"""The router's response cycle (router/server.py, `OneWriteCycle`): an answer's head goes out with
its first body bytes, in one write; a stream's head no later than the end of the loop's turn."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl

from tandem.router.server import OneWriteCycle


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def _cycle(transport: RecordingTransport, method: str = "POST", keep_alive: bool = True) -> OneWriteCycle:
    scope: Any = {"type": "http", "method": method, "path": "/", "http_version": "1.1", "headers": []}
    cycle = OneWriteCycle(
        scope,
        transport,  # type: ignore[arg-type]
        FlowControl(transport),  # type: ignore[arg-type]
        logging.getLogger("test"),
        logging.getLogger("test.access"),
        False,
        [(b"server", b"tandem")],
        asyncio.Event(),
        False,
        keep_alive,
        lambda: None,
    )
    cycle.loop = asyncio.get_running_loop()
    return cycle


def _start(length: int | None) -> Any:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": 200, "headers": headers}


async def test_a_whole_answer_is_one_write() -> None:
    transport = RecordingTransport()
    cycle = _cycle(transport)
    await cycle.send(_start(7))
    assert transport.writes == []  # held for the body
    await cycle.send({"type": "http.response.body", "body": b'{"a":1}'})
    assert len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.writes[0].endswith(b'content-length: 7\r\n\r\n{"a":1}')
    assert cycle.response_complete and cycle.message_event.is_set() and not transport.closed


async def test_a_whole_answer_without_keep_alive_closes_after_its_one_write() -> None:
    transport = RecordingTransport()
    cycle = _cycle(transport, keep_alive=False)
    await cycle.send(_start(2))
    await cycle.send({"type": "http.response.body", "body": b"ok"})
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"connection: close\r\n\r\nok")
    assert transport.closed


async def test_a_stream_head_goes_with_its_first_event() -> None:
    transport = RecordingTransport()
    cycle = _cycle(transport)
    await cycle.send(_start(None))
    await cycle.send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
    assert len(transport.writes) == 1
    assert transport.writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n9\r\ndata: x\n\n\r\n")
    await cycle.send({"type": "http.response.body", "body": b""})
    assert transport.writes[1:] == [b"0\r\n\r\n"] and cycle.response_complete


async def test_a_stream_head_goes_out_at_the_end_of_the_turn_without_an_event() -> None:
    transport = RecordingTransport()
    cycle = _cycle(transport)
    await cycle.send(_start(None))
    assert transport.writes == []
    await asyncio.sleep(0)
    assert len(transport.writes) == 1 and transport.writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n")
    await cycle.send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
    assert transport.writes[1] == b"9\r\ndata: x\n\n\r\n"


async def test_a_body_in_pieces_goes_out_piece_by_piece_its_head_with_the_first() -> None:
    transport = RecordingTransport()
    cycle = _cycle(transport)
    await cycle.send(_start(4))
    await cycle.send({"type": "http.response.body", "body": b"ab", "more_body": True})
    await cycle.send({"type": "http.response.body", "body": b"cd"})
    assert transport.writes[1:] == [b"cd"] and transport.writes[0].endswith(b"content-length: 4\r\n\r\nab")
    assert cycle.response_complete


async def test_a_head_request_gets_its_head_at_once() -> None:
    transport = RecordingTransport()
    cycle = _cycle(transport, method="HEAD")
    await cycle.send(_start(7))
    assert len(transport.writes) == 1
