"""The data path's HTTP client against scripted engines, on asyncio's loop and on uvloop (which the
router runs on): keep-alive, body framings, streaming, backpressure, breaks and closes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from tandem.router.engine_http import EngineClient, EngineConnectionError, EngineSilentError, Timeouts

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Engine"], Awaitable[None]]
LOOPS = pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)

GENEROUS = Timeouts(connect_s=2, first_byte_s=10, idle_s=10)  # never reached by these engines


@dataclass
class Engine:
    """A scripted engine: `answer` writes the reply to each request it reads."""

    answer: Answer
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await reader.readexactly(length)


async def serving(answer: Answer, scenario: Callable[[Engine], Awaitable[None]]) -> None:
    engine = Engine(answer)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        engine.connections += 1
        try:
            while (request := await _read_request(reader)) is not None:
                engine.requests.append(request)
                await engine.answer(reader, writer, engine)
                if writer.is_closing():
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            engine.closed.set()
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    engine.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        await scenario(engine)
    finally:
        server.close()


def run(loop_factory: Callable[[], asyncio.AbstractEventLoop], coroutine: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(asyncio.wait_for(coroutine, 10))


def whole(body: bytes, extra: bytes = b"") -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, engine: Engine) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body))
        await writer.drain()

    return answer


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@LOOPS
def test_engine_client_reuses_one_kept_alive_connection(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        for i in range(3):
            resp = await client.post(engine.url, "/v1/completions", b'{"n": %d}' % i, f"req-{i}", GENEROUS)
            assert resp.status == 200
            assert await resp.read() == b'{"ok": true}'
            resp.release()
        await client.close()
        assert engine.connections == 1
        first = engine.requests[0]
        assert first.startswith(b"POST /v1/completions HTTP/1.1\r\n")
        assert b"\r\nX-Request-Id: req-0\r\n" in first
        assert b"\r\nContent-Type: application/json\r\n" in first
        assert first.endswith(b'\r\n\r\n{"n": 0}')

    run(loop_factory, serving(whole(b'{"ok": true}'), scenario))


@LOOPS
def test_engine_client_opens_a_new_connection_after_the_idle_timeout(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def scenario(engine: Engine) -> None:
        client = EngineClient(keepalive_s=0.05)
        for _ in range(2):
            resp = await client.post(engine.url, "/v1/completions", b"{}", "r", GENEROUS)
            await resp.read()
            resp.release()
            await asyncio.sleep(0.1)
        await client.close()
        assert engine.connections == 2

    run(loop_factory, serving(whole(b"{}"), scenario))


@LOOPS
def test_engine_client_streams_chunks_as_the_engine_sends_them(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    second = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, engine: Engine) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(chunk(b"data: first\n\n"))
        await writer.drain()
        await second.wait()  # the client has the first event before the second exists
        writer.write(chunk(b"data: second\n\n") + chunk(b""))
        await writer.drain()

    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        resp = await client.post(engine.url, "/v1/chat/completions", b"{}", "r", GENEROUS)
        got = []
        async for chunk in resp.iter_chunks():
            got.append(chunk)
            second.set()
        resp.release()
        assert got == [b"data: first\n\n", b"data: second\n\n"]
        resp = await client.post(
            engine.url, "/v1/chat/completions", b"{}", "r", GENEROUS
        )  # reused after a chunked body
        await resp.read()
        resp.release()
        await client.close()
        assert engine.connections == 1

    run(loop_factory, serving(chunked, scenario))


@LOOPS
def test_engine_client_reads_a_body_that_the_close_ends(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def unframed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, engine: Engine) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        writer.close()

    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        for _ in range(2):
            resp = await client.post(engine.url, "/v1/completions", b"{}", "r", GENEROUS)
            assert await resp.read() == b"all of it"
            resp.release()
        await client.close()
        assert engine.connections == 2  # a closed connection is not reused

    run(loop_factory, serving(unframed, scenario))


@LOOPS
def test_engine_client_raises_when_the_engine_breaks_off(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, engine: Engine) -> None:
        if len(engine.requests) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
            await writer.drain()
        writer.close()  # the second request gets no answer at all

    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        resp = await client.post(engine.url, "/v1/completions", b"{}", "r", GENEROUS)
        with pytest.raises(EngineConnectionError, match="mid-answer"):
            await resp.read()
        resp.release()
        with pytest.raises(EngineConnectionError, match="before the answer"):
            await client.post(engine.url, "/v1/completions", b"{}", "r", GENEROUS)
        await client.close()

    run(loop_factory, serving(short, scenario))


@LOOPS
def test_engine_client_raises_when_nothing_listens(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        with pytest.raises(EngineConnectionError, match="cannot connect"):
            await client.post("http://127.0.0.1:1", "/v1/completions", b"{}", "r", GENEROUS)

    run(loop_factory, serving(whole(b""), scenario))


@LOOPS
def test_engine_client_passes_a_large_body_through_its_backpressure(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    body = bytes(range(256)) * 16 * 1024  # 4 MiB: reading pauses and resumes many times

    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        resp = await client.post(engine.url, "/v1/completions", b"{}", "r", GENEROUS)
        await asyncio.sleep(0.2)  # let the engine fill the buffers while nobody reads
        received = bytearray()
        async for chunk in resp.iter_chunks():
            received += chunk
        resp.release()
        await client.close()
        assert bytes(received) == body

    run(loop_factory, serving(whole(body), scenario))


@LOOPS
def test_engine_client_close_hangs_up_on_the_engine(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, engine: Engine) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:  # until the client hangs up: then the write fails
            writer.write(chunk(b"data: "))
            await writer.drain()
            await asyncio.sleep(0.01)

    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        resp = await client.post(engine.url, "/v1/chat/completions", b"{}", "r", GENEROUS)
        async for _ in resp.iter_chunks():
            break
        resp.close()
        await asyncio.wait_for(engine.closed.wait(), 5)
        await client.close()

    run(loop_factory, serving(endless, scenario))


@LOOPS
def test_engine_client_close_fails_answers_still_streaming(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, engine: Engine) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"data: "))
        await writer.drain()
        await asyncio.sleep(30)

    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        resp = await client.post(engine.url, "/v1/chat/completions", b"{}", "r", GENEROUS)
        chunks = resp.iter_chunks()
        assert await anext(chunks) == b"data: "
        await client.close()  # the router shutting down
        with pytest.raises(EngineConnectionError, match="mid-answer"):
            await anext(chunks)

    run(loop_factory, serving(endless, scenario))


def silent_after(head: bytes, *events: bytes) -> Answer:
    """An engine that sends `head` and `events`, then nothing, until the client hangs up."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, engine: Engine) -> None:
        writer.write(head + b"".join(chunk(e) for e in events))
        await writer.drain()
        await reader.read()  # returns when the client closes the connection

    return answer


STREAM_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


@LOOPS
def test_engine_client_gives_up_on_an_answer_that_never_begins(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """A hung engine (its /health may still say 200) answers nothing: after `first_byte_s` the
    exchange fails and the connection closes, so the engine drops the request."""

    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        timeouts = Timeouts(connect_s=2, first_byte_s=0.2, idle_s=10)
        with pytest.raises(EngineSilentError, match=r"no answer within 0\.2 s"):
            await client.post(engine.url, "/v1/completions", b"{}", "r", timeouts)
        await asyncio.wait_for(engine.closed.wait(), 5)
        await client.close()

    run(loop_factory, serving(silent_after(b""), scenario))


@LOOPS
def test_engine_client_counts_a_streams_first_event_as_its_first_byte(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """vLLM sends a stream's head at once and its first event with the first token
    (vllm/entrypoints/openai/completion/api_router.py: a StreamingResponse over a generator that
    create_completion returns before it runs): a head alone is not an answer."""

    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        timeouts = Timeouts(connect_s=2, first_byte_s=0.2, idle_s=10)
        resp = await client.post(engine.url, "/v1/completions", b"{}", "r", timeouts)
        assert resp.status == 200
        with pytest.raises(EngineSilentError, match=r"no answer within 0\.2 s"):
            await resp.first()
        resp.close()
        await asyncio.wait_for(engine.closed.wait(), 5)
        await client.close()

    run(loop_factory, serving(silent_after(STREAM_HEAD), scenario))


@LOOPS
def test_engine_client_ends_a_stream_that_falls_silent(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        timeouts = Timeouts(connect_s=2, first_byte_s=10, idle_s=0.2)
        resp = await client.post(engine.url, "/v1/completions", b"{}", "r", timeouts)
        assert await resp.first() == b"data: one\n\n"
        with pytest.raises(EngineSilentError, match=r"silent for 0\.2 s"):
            async for _ in resp.iter_chunks():
                pass
        resp.close()
        await asyncio.wait_for(engine.closed.wait(), 5)
        await client.close()

    run(loop_factory, serving(silent_after(STREAM_HEAD, b"data: one\n\n"), scenario))


@LOOPS
def test_engine_client_lets_a_steady_stream_run_past_its_idle_time(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """The idle time bounds each silence, not the stream: the watchdog re-arms on what came."""
    events = [b"data: %d\n\n" % i for i in range(60)]

    async def steady(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, engine: Engine) -> None:
        writer.write(STREAM_HEAD)
        for data in events:
            writer.write(chunk(data))
            await writer.drain()
            await asyncio.sleep(0.02)  # 1.2 s in all: the 0.5 s watchdog fires and re-arms
        writer.write(chunk(b""))
        await writer.drain()

    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        resp = await client.post(engine.url, "/v1/completions", b"{}", "r", Timeouts(2, 10, 0.5))
        received = await resp.first() + b"".join([c async for c in resp.iter_chunks()])
        resp.release()
        await client.close()
        assert received == b"".join(events)

    run(loop_factory, serving(steady, scenario))


@LOOPS
def test_engine_client_waits_on_a_whole_answer_for_its_first_byte_time_only(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """A whole answer comes in one piece once it is complete: its wait is the first byte's, not
    the idle time's."""

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, engine: Engine) -> None:
        await asyncio.sleep(0.5)
        await whole(b'{"ok": true}')(reader, writer, engine)

    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        resp = await client.post(engine.url, "/v1/completions", b"{}", "r", Timeouts(2, 10, 0.1))
        assert await resp.read() == b'{"ok": true}'
        resp.release()
        await client.close()

    run(loop_factory, serving(slow, scenario))


@LOOPS
def test_engine_client_does_not_count_its_own_pause_as_the_engines_silence(
    loop_factory: Callable[[], asyncio.AbstractEventLoop],
) -> None:
    """A slow client pauses reading (backpressure); the engine is then blocked, not silent."""
    body = bytes(range(256)) * 16 * 1024  # 4 MiB: far over the high-water mark

    async def scenario(engine: Engine) -> None:
        client = EngineClient()
        resp = await client.post(engine.url, "/v1/completions", b"{}", "r", Timeouts(2, 10, 0.1))
        await asyncio.sleep(0.5)  # nobody reads for five idle times
        received = await resp.first() + b"".join([c async for c in resp.iter_chunks()])
        resp.release()
        await client.close()
        assert received == body

    run(loop_factory, serving(whole(body), scenario))
