"""The router's response cycle (router/server.py, `OneWriteCycle`): an answer's head goes out with
its first body bytes, in one write; a stream's head no later than the end of the loop's turn."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from tandem.router.server import OneWriteCycle

C = TypeVar("C", bound=RequestResponseCycle)


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def _cycle(transport: RecordingTransport, method: str = "POST", keep_alive: bool = True) -> OneWriteCycle:
    cycle = _new(OneWriteCycle, transport, method, keep_alive)
    cycle.loop = asyncio.get_running_loop()
    return cycle


def _uvicorn_cycle(transport: RecordingTransport, method: str, keep_alive: bool) -> RequestResponseCycle:
    return _new(RequestResponseCycle, transport, method, keep_alive)


def _new(kind: type[C], transport: RecordingTransport, method: str, keep_alive: bool) -> C:
    scope: Any = {"type": "http", "method": method, "path": "/", "http_version": "1.1", "headers": []}
    return kind(
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


def _body(data: bytes, more: bool = False) -> Any:
    return {"type": "http.response.body", "body": data, "more_body": more}


def _head(status: int, *headers: tuple[bytes, bytes]) -> Any:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


JSON = (b"content-type", b"application/json")
ANSWERS: dict[str, tuple[str, bool, list[Any]]] = {
    "whole": ("POST", True, [_head(200, JSON, (b"content-length", b"7")), _body(b'{"a":1}')]),
    "stream": ("POST", True, [_head(200, JSON), _body(b"data: 1\n\n", True), _body(b"", True), _body(b"")]),
    "stream, last bytes in the last message": ("POST", True, [_head(200), _body(b"x", True), _body(b"y")]),
    "chunked named": ("POST", True, [_head(200, (b"Transfer-Encoding", b"chunked")), _body(b"x")]),
    "connection: close": ("POST", True, [_head(200, (b"Connection", b"keep-alive, Close")), _body(b"x")]),
    "not kept alive": ("POST", False, [_head(503, (b"content-length", b"2")), _body(b"no")]),
    "HEAD": ("HEAD", True, [_head(200, (b"content-length", b"9")), _body(b"")]),
    "204": ("POST", True, [_head(204), _body(b"")]),
    "bad header name": ("POST", True, [_head(200, (b"x y", b"1"))]),
    "bad header value": ("POST", True, [_head(200, (b"x-id", b"a\r\nset-cookie: 1"))]),
    "body too long": ("POST", True, [_head(200, (b"content-length", b"1")), _body(b"xy")]),
    "body too short": ("POST", True, [_head(200, (b"content-length", b"3")), _body(b"xy")]),
    "body first": ("POST", True, [_body(b"x")]),
    "start twice": ("POST", True, [_head(200), _head(200)]),
    "after the end": ("POST", True, [_head(200, (b"content-length", b"0")), _body(b""), _body(b"")]),
}


@pytest.mark.parametrize("case", ANSWERS)
async def test_the_cycle_sends_what_uvicorns_sends(case: str) -> None:
    """OneWriteCycle.send is uvicorn 0.54's rewritten (router/server.py): for every answer, the same
    bytes on the wire, the same errors, the same keep-alive and close. Where the app breaks its
    answer (an error), the head it held may not have gone out: what went is a prefix of uvicorn's."""
    method, keep_alive, messages = ANSWERS[case]
    outcomes = []
    for make in (_cycle, _uvicorn_cycle):
        transport = RecordingTransport()
        cycle = make(transport, method, keep_alive)
        error = None
        try:
            for message in messages:
                await cycle.send(message)
        except RuntimeError as exc:
            error = str(exc)
        await asyncio.sleep(0)  # a held stream head is flushed at the end of the turn
        state = (cycle.response_complete, cycle.keep_alive, transport.closed)
        outcomes.append((b"".join(transport.writes), error, state))
    (ours, error, state), (theirs, their_error, their_state) = outcomes
    assert (error, state) == (their_error, their_state)
    assert ours == theirs if error is None else theirs.startswith(ours)
