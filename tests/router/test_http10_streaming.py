"""HTTP/1.0 clients get streams they can read: no chunked framing, which HTTP/1.0 does not have
(RFC 9112 §6.1: a server MUST NOT send Transfer-Encoding unless the request is HTTP/1.1 or later),
the body's end marked by the connection's close (§6.3). Before, uvicorn's httptools protocol
framed every body of unknown length in chunks, whatever the request's version."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest
from http_wire import exchange
from router_support import (
    MODEL,
    Addresses,
    Engine,
    direct_router_settings,
    engines_running,
    router_running,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with engines_running([(Addresses().take(), ([], {}))]) as engines:
        yield engines[0]


@pytest.fixture
async def url(engine: Engine) -> AsyncIterator[str]:
    async with router_running(direct_router_settings(engine.url)) as url:
        yield url


def post(version: bytes, payload: dict[str, object]) -> bytes:
    body = json.dumps(payload).encode()
    head = b"POST /v1/completions HTTP/%s\r\nHost: r\r\nContent-Length: %d\r\n\r\n" % (version, len(body))
    return head + body


async def test_a_stream_to_an_http10_client_is_bare_and_ends_with_the_connection(url: str) -> None:
    request = post(b"1.0", {"model": MODEL, "prompt": "Hi", "max_tokens": 5, "stream": True})
    answer = await exchange(url, request)
    assert answer.status == 200
    assert "transfer-encoding" not in answer.headers and "content-length" not in answer.headers
    assert answer.headers["connection"] == "close"
    events = [block for block in answer.body.split(b"\n\n") if block]
    assert events[-1] == b"data: [DONE]"
    assert all(event.startswith(b"data: ") for event in events)  # no chunk sizes between them
    assert len(events) == 5 + 1


async def test_a_whole_answer_to_an_http10_client_keeps_its_length(url: str) -> None:
    answer = await exchange(url, post(b"1.0", {"model": MODEL, "prompt": "Hi", "max_tokens": 3}))
    assert answer.status == 200 and int(answer.headers["content-length"]) == len(answer.body)
    assert json.loads(answer.body)["usage"]["completion_tokens"] == 3


async def test_http11_streams_stay_chunked(url: str) -> None:
    request = post(b"1.1", {"model": MODEL, "prompt": "Hi", "max_tokens": 2, "stream": True})
    answer = await exchange(url, request.replace(b"Host: r\r\n", b"Host: r\r\nConnection: close\r\n"))
    assert answer.headers["transfer-encoding"] == "chunked"
    assert answer.body.endswith(b"0\r\n\r\n")
