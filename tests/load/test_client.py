"""One streamed request: its timing on a virtual clock, and its failures over a real loopback socket.

Chunk shapes are vLLM's: completions ``choices[0].text``, chat ``choices[0].delta`` opening with a
``role``-only chunk, a last ``choices: []`` chunk with ``usage`` under ``stream_options.include_usage``,
then ``data: [DONE]`` (vllm/entrypoints/openai/completion/serving.py and chat_completion/serving.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tandem.load.client import Measured, StreamTimer, read_events, stream_request
from tandem.load.endpoint import Endpoint
from tandem.load.records import ErrorKind
from tandem.load.sse import SseDecoder
from tandem.sim.testing import free_port


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


def completion(text: str, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "cmpl-1",
        "object": "text_completion",
        "choices": [{"index": 0, "text": text, "finish_reason": finish}],
    }


def chat(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def usage(prompt: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": "x",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens},
    }


def sse(event: dict[str, Any] | str) -> bytes:
    return (event if isinstance(event, str) else f"data: {json.dumps(event)}\n\n").encode()


DONE = "data: [DONE]\n\n"


async def fold(
    events: Sequence[tuple[float, dict[str, Any] | str]], endpoint: Endpoint = Endpoint.COMPLETIONS
) -> Measured:
    """The measurement of a stream whose bytes arrive at the given virtual times."""
    clock = Clock()
    measured = Measured(sent_s=0.0)

    async def chunks() -> AsyncIterator[bytes]:
        for at, event in events:
            clock.t = at
            yield sse(event)

    await read_events(chunks(), StreamTimer(endpoint, measured), clock.now)
    return measured


async def test_ttft_itl_and_latency_come_from_token_chunks() -> None:
    m = await fold(
        [
            (0.25, completion(" a")),
            (0.27, completion(" b")),
            (0.30, completion(" c", "length")),
            (0.31, usage(12, 3)),
            (0.32, DONE),
        ]
    )
    assert m.error is None
    assert (m.ttft_s, m.latency_s) == (0.25, 0.30)
    assert m.itl_s == pytest.approx([0.02, 0.03])
    assert (m.server_prompt_tokens, m.server_output_tokens, m.finish_reason) == (12, 3, "length")


async def test_chat_opening_role_chunk_is_not_the_first_token() -> None:
    m = await fold(
        [
            (0.1, chat({"role": "assistant", "content": ""})),
            (0.4, chat({"content": " a"})),
            (0.5, chat({"content": ""})),  # a token that decodes to nothing still counts
            (0.7, chat({"content": " c"}, "stop")),
            (0.8, usage(5, 3)),
            (0.9, DONE),
        ],
        Endpoint.CHAT,
    )
    assert m.error is None
    assert m.ttft_s == pytest.approx(0.4)
    assert m.itl_s == pytest.approx([0.1, 0.2])
    assert m.latency_s == pytest.approx(0.7)  # the usage chunk carries no token


async def test_events_arriving_together_share_their_arrival_time() -> None:
    clock = Clock()
    measured = Measured(sent_s=0.0)

    async def chunks() -> AsyncIterator[bytes]:
        clock.t = 0.5
        yield sse(completion(" a")) + sse(completion(" b")) + sse(completion(" c", "length"))[:10]
        clock.t = 0.6
        yield sse(completion(" c", "length"))[10:] + DONE.encode()

    await read_events(chunks(), StreamTimer(Endpoint.COMPLETIONS, measured), clock.now)
    assert (measured.ttft_s, measured.itl_s, measured.latency_s) == (0.5, [0.0, pytest.approx(0.1)], 0.6)


@pytest.mark.parametrize(
    ("events", "kind"),
    [
        ([(0.1, completion(" a"))], ErrorKind.STREAM_BROKEN),  # ended with neither a finish reason nor [DONE]
        (
            [(0.1, completion(" a")), (0.2, {"error": {"message": "engine died", "code": 500}})],
            ErrorKind.STREAM_ERROR,
        ),
        ([(0.1, "data: {not json\n\n")], ErrorKind.STREAM_ERROR),
        ([(0.1, "data: [1, 2]\n\n")], ErrorKind.STREAM_ERROR),  # JSON, but not an object
        ([(0.1, usage(5, 0)), (0.2, DONE)], ErrorKind.NO_TOKENS),
    ],
)
async def test_a_stream_that_goes_wrong_has_its_kind(
    events: list[tuple[float, Any]], kind: ErrorKind
) -> None:
    assert (await fold(events)).error is kind


async def test_a_finished_stream_without_done_still_completes() -> None:
    m = await fold([(0.1, completion(" a")), (0.2, completion(" b", "length"))])
    assert m.error is None and m.finish_reason == "length"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/v1/completions", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)  # handlers left hanging are cancelled
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def request(handler: Handler | None, timeout_s: float = 60) -> Measured:
    """One request to a loopback server running ``handler`` (None: nothing listens)."""
    runner, url = await serve(handler) if handler else (None, f"http://127.0.0.1:{free_port()}")
    try:
        async with aiohttp.ClientSession() as session:
            return await stream_request(
                session, url, Endpoint.COMPLETIONS, {"model": "m"}, Clock().now, timeout_s
            )
    finally:
        if runner is not None:
            await runner.cleanup()


async def test_a_stream_over_a_socket_completes() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        assert (await request.json()) == {"model": "m"}
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in (completion(" a"), completion(" b", "length"), usage(3, 2), DONE):
            await response.write(sse(event))
        return response

    m = await request(handler)
    assert (m.error, m.server_output_tokens, len(m.itl_s)) == (None, 2, 1)


async def test_an_error_status_keeps_the_servers_message() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = {
            "error": {"message": "the model is overloaded", "type": "ServiceUnavailableError", "code": 503}
        }
        return web.json_response(body, status=503)

    m = await request(handler)
    assert (m.error, m.status, m.detail) == (ErrorKind.HTTP, 503, "the model is overloaded")


async def test_a_connection_dropped_mid_stream_is_a_broken_stream() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(sse(completion(" a")))
        assert request.transport is not None
        request.transport.close()
        return response

    m = await request(handler)
    assert m.error is ErrorKind.STREAM_BROKEN and m.ttft_s is not None


async def test_nothing_listening_is_a_connection_error() -> None:
    assert (await request(None)).error is ErrorKind.CONNECTION


async def test_a_request_over_its_time_limit_times_out() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(sse(completion(" a")))
        await asyncio.Event().wait()
        return response

    m = await request(handler, timeout_s=0.2)
    assert m.error is ErrorKind.TIMEOUT and m.ttft_s is not None


async def test_cancelling_the_request_is_not_swallowed() -> None:
    started = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    runner, url = await serve(handler)
    try:
        async with aiohttp.ClientSession() as session:
            task = asyncio.create_task(
                stream_request(session, url, Endpoint.COMPLETIONS, {}, Clock().now, 60)
            )
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    finally:
        await runner.cleanup()


def decode(chunks: list[bytes]) -> list[str]:
    sse_decoder = SseDecoder()
    events = [data for chunk in chunks for data in sse_decoder.feed(chunk)]
    last = sse_decoder.close()
    return [*events, last] if last is not None else events


@pytest.mark.parametrize(
    ("chunks", "events"),
    [
        ([b"data: a\n\ndata: b\n\n"], ["a", "b"]),
        ([b"data: one\ndata: two\n\n"], ["one\ntwo"]),  # multi-line data joins with newlines
        ([b": keep-alive\n\nevent: delta\nid: 7\ndata:x\n\n"], ["x"]),  # comments and other fields
        ([b"data:  two spaces\n\n"], [" two spaces"]),  # only one leading space is dropped
        ([b"data: [DONE]"], ["[DONE]"]),  # a last event without its line end
        ([b"da", b"ta: spl", b"it\n", b"\n"], ["split"]),  # lines cut anywhere
        ([b"data: a\r\n\r\ndata: b\r\r"], ["a", "b"]),  # CRLF and CR line ends
        ([b"data: a\r", b"\ndata: b\r\n\r\n"], ["a\nb"]),  # a CRLF cut in two is one line end
        ([b"\n\nretry: 10\n\n"], []),
        ([b"data\n\ndatabase: x\n\n"], [""]),  # a field named data without a colon; another field
        ([b"data: a\n", b"\ndata: b\r\n\r\n"], ["a", "b"]),  # LF lines, then CRLF lines
        ([("data: " + "x" * 200_000 + "\n\n").encode()], ["x" * 200_000]),  # no line length limit
    ],
)
def test_sse_decoding_follows_the_event_stream_rules(chunks: list[bytes], events: list[str]) -> None:
    assert decode(chunks) == events
