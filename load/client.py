"""Send one streamed request and time it: the I/O at the edge of a run.

The clock is a parameter (seconds from the start of the run), read when the request is sent and
whenever bytes of the stream arrive. Every failure becomes a value with its kind
(:class:`~tandem.load.records.ErrorKind`); nothing but cancellation escapes.

aiohttp, as ``vllm bench serve`` uses: it spends about a third of httpx's CPU per streamed chunk
(measured on the development machine), and a load generator's own CPU is what limits how fast it
can stream before its timestamps, not the server, set the ITL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import aiohttp
import msgspec

from tandem.load.endpoint import Endpoint, finish_reason
from tandem.load.records import ErrorKind
from tandem.load.sse import SseDecoder

_DETAIL_CHARS = 300
_decode_json = msgspec.json.Decoder().decode  # json.loads' answers, in about a third of its CPU


@dataclass
class Measured:
    """What the stream of one request showed (times in seconds from the start of the run)."""

    sent_s: float
    ended_s: float = 0.0
    ttft_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    latency_s: float | None = None
    server_prompt_tokens: int | None = None
    server_output_tokens: int | None = None
    finish_reason: str | None = None
    error: ErrorKind | None = None
    status: int | None = None
    detail: str = ""


def error_message(body: bytes) -> str:
    """The message of an OpenAI-style error body, else the start of the body."""
    text = body.decode(errors="replace")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return text[:_DETAIL_CHARS]
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        message = error.get("message") if isinstance(error, dict) else error
        if isinstance(message, str):
            return message[:_DETAIL_CHARS]
    return text[:_DETAIL_CHARS]


class StreamTimer:
    """Folds the events of one stream, each with the time it arrived, into a :class:`Measured`."""

    def __init__(self, endpoint: Endpoint, measured: Measured) -> None:
        self.endpoint = endpoint
        self.measured = measured
        self.last_token_s: float | None = None
        self.done = False  # [DONE] arrived

    def event(self, data: str, at_s: float) -> bool:
        """Take one event's data; False once the stream has nothing more to say."""
        m = self.measured
        if data == "[DONE]":
            self.done = True
            return False
        try:
            chunk = _decode_json(data)
        except msgspec.DecodeError:
            m.error, m.detail = ErrorKind.STREAM_ERROR, f"an event is not JSON: {data[:_DETAIL_CHARS]}"
            return False
        if not isinstance(chunk, dict):
            m.error, m.detail = (
                ErrorKind.STREAM_ERROR,
                f"an event is not a JSON object: {data[:_DETAIL_CHARS]}",
            )
            return False
        if "error" in chunk:
            m.error, m.detail = ErrorKind.STREAM_ERROR, error_message(data.encode())
            return False
        if self.endpoint.is_token_chunk(chunk):
            if self.last_token_s is None:
                m.ttft_s = at_s - m.sent_s
            else:
                m.itl_s.append(at_s - self.last_token_s)
            self.last_token_s = at_s
            m.latency_s = at_s - m.sent_s
        m.finish_reason = finish_reason(chunk) or m.finish_reason
        usage: Any = chunk.get("usage")
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            m.server_prompt_tokens = prompt if isinstance(prompt, int) else m.server_prompt_tokens
            m.server_output_tokens = completion if isinstance(completion, int) else m.server_output_tokens
        return True

    def finish(self) -> None:
        """Judge the stream once it ended normally (no transport error)."""
        m = self.measured
        if m.error is not None:
            return
        if not self.done and m.finish_reason is None:
            m.error, m.detail = ErrorKind.STREAM_BROKEN, "the stream ended before its last chunk"
        elif m.ttft_s is None:
            m.error, m.detail = ErrorKind.NO_TOKENS, "the stream finished without a token"


async def stream_request(
    session: aiohttp.ClientSession,
    url: str,
    endpoint: Endpoint,
    body: dict[str, Any],
    now: Callable[[], float],
    timeout_s: float,
) -> Measured:
    """POST ``body`` (``stream: true``) to ``url`` + the endpoint's path and measure the answer."""
    measured = Measured(sent_s=now())
    stream = StreamTimer(endpoint, measured)
    began = False  # the response's headers arrived
    try:
        async with asyncio.timeout(timeout_s), session.post(url + endpoint.path, json=body) as response:
            began = True
            if response.status != HTTPStatus.OK:
                measured.error, measured.status = ErrorKind.HTTP, response.status
                measured.detail = error_message(await response.read())
            else:
                await read_events(response.content.iter_any(), stream, now)
    except TimeoutError as exc:  # asyncio's, and aiohttp's connect and read timeouts
        measured.error, measured.detail = ErrorKind.TIMEOUT, f"no answer within the limit ({exc!r})"
    except aiohttp.ClientError as exc:
        measured.error = ErrorKind.STREAM_BROKEN if began else ErrorKind.CONNECTION
        measured.detail = repr(exc)
    measured.ended_s = now()
    return measured


async def read_events(chunks: AsyncIterable[bytes], stream: StreamTimer, now: Callable[[], float]) -> None:
    """Feed a stream's bytes, as they arrive, to ``stream``; judge it when it ends."""
    decoder = SseDecoder()
    async for chunk in chunks:
        at_s = now()
        for data in decoder.feed(chunk):
            if not stream.event(data, at_s):
                stream.finish()
                return
    last = decoder.close()
    if last is not None:
        stream.event(last, now())
    stream.finish()
