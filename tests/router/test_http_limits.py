"""The limits on what a client may send, over real sockets: they live in the server's protocol
(router/server.py), where uvicorn's httptools protocol has none -- a 20 MB header or 100k headers
were served with 200, and a head or body that never finished held its connection forever."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from http_wire import RawResponse, connect, exchange, parse_response, read_to_close
from router_support import direct_router_settings, free_port, router_running

from tandem.router.settings import RouterSettings

pytestmark = pytest.mark.slow

TIMEOUT_S = 0.5  # the head and body timeouts here; tests never measure them, only that they end
GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: router\r\nConnection: close\r\n"


def settings(**overrides: float) -> RouterSettings:
    engine = f"http://127.0.0.1:{free_port()}"
    return direct_router_settings(
        engine, **{"header_timeout_s": TIMEOUT_S, "body_timeout_s": TIMEOUT_S, **overrides}
    )


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with router_running(settings()) as url:
        yield url


def assert_openai_error(answer: RawResponse, status: int, code: str) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"] == "application/json"
    error = json.loads(answer.body)["error"]
    assert error["code"] == code and error["message"] and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("count", [101, 100_000])  # within one read, and over many
async def test_too_many_headers_get_431(url: str, count: int) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % n for n in range(count))
    answer = await exchange(url, GET_HEALTH + headers + b"\r\n")
    assert_openai_error(answer, 431, "too_many_headers")
    assert answer.headers["connection"] == "close"


async def test_a_forty_kilobyte_head_in_one_read_gets_431(url: str) -> None:
    answer = await exchange(url, GET_HEALTH + b"X-Big: " + b"x" * 40_000 + b"\r\n\r\n")
    assert_openai_error(answer, 431, "headers_too_large")


async def test_a_twenty_megabyte_header_gets_431(url: str) -> None:
    big = b"X-Big: " + b"x" * (20 * 1024**2) + b"\r\n\r\n"
    answer = await exchange(url, GET_HEALTH, *(big[i : i + 65536] for i in range(0, len(big), 65536)))
    assert_openai_error(answer, 431, "headers_too_large")


async def test_headers_within_the_limits_are_served_even_in_small_pieces(url: str) -> None:
    """90 headers, 27 KB in all, arriving 100 bytes at a time: under both limits however they are
    counted (the chunks and the parsed headers must not add up to the same bytes twice)."""
    head = GET_HEALTH + b"".join(b"X-H%02d: %s\r\n" % (n, b"v" * 300) for n in range(90)) + b"\r\n"
    assert 25_000 < len(head) < 32 * 1024
    answer = await exchange(url, *(head[i : i + 100] for i in range(0, len(head), 100)))
    assert answer.status == 200


async def test_a_url_over_the_limit_gets_414(url: str) -> None:
    answer = await exchange(url, b"GET /health?" + b"q" * (40 * 1024) + b" HTTP/1.1\r\nHost: r\r\n\r\n")
    assert_openai_error(answer, 414, "uri_too_long")


async def test_a_head_that_stalls_gets_408(url: str) -> None:
    reader, writer = await connect(url)
    writer.write(b"GET /health HTTP/1.1\r\nHost: router\r\nX-Slow: ")  # ...and nothing more
    answer = await read_to_close(reader)
    writer.close()
    assert_openai_error(parse_response(answer), 408, "header_timeout")


async def test_a_connection_that_sends_nothing_is_closed(url: str) -> None:
    reader, writer = await connect(url)
    assert await read_to_close(reader) == b""  # closed, with nothing to answer
    writer.close()


@pytest.mark.parametrize("begun", [b"", b'{"prompt": '])
async def test_a_body_that_stalls_gets_408_and_the_connection_closes(url: str, begun: bytes) -> None:
    reader, writer = await connect(url)
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + begun
    )
    answer = parse_response(await read_to_close(reader))  # to the close: the connection is done
    writer.close()
    assert_openai_error(answer, 408, "body_timeout")


async def test_a_body_left_unread_may_not_hold_the_connection(url: str) -> None:
    """The app answered at once (404: no such route) without reading the body; a body that then
    never ends is cut off at the body timeout rather than holding the connection open."""
    reader, writer = await connect(url)
    writer.write(b"POST /nowhere HTTP/1.1\r\nHost: router\r\nContent-Length: 100\r\n\r\n{")
    answer = parse_response(await read_to_close(reader))
    writer.close()
    assert answer.status == 404


async def test_a_malformed_request_gets_an_openai_400(url: str) -> None:
    answer = await exchange(url, b"GET /health HTTP/1.1\r\nHost: router\r\nBad Header\r\n\r\n")
    assert_openai_error(answer, 400, "invalid_http")


async def test_requests_after_a_refusal_go_elsewhere(url: str) -> None:
    """A refusal ends only its own connection."""
    await exchange(url, GET_HEALTH + b"X-Big: " + b"x" * 40_000 + b"\r\n\r\n")
    assert (await exchange(url, GET_HEALTH + b"\r\n")).status == 200


async def test_the_head_timer_stops_at_the_last_header() -> None:
    """A request whose body takes longer than the head timeout (but not the body timeout) is
    answered: the head timer, armed when the connection opened, stopped with the head."""
    async with router_running(settings(header_timeout_s=1.0, body_timeout_s=60)) as url:
        reader, writer = await connect(url)
        body = json.dumps({"model": "other", "prompt": "x"}).encode()
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: r\r\nConnection: close\r\n")
        writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
        await writer.drain()
        await asyncio.sleep(2.0)  # the slow client itself, not a wait for the server
        writer.write(body[5:])
        answer = parse_response(await read_to_close(reader))
        writer.close()
    assert answer.status == 404 and json.loads(answer.body)["error"]["code"] == "model_not_found"
