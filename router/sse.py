"""Server-sent events as vLLM's OpenAI server writes them: `data: <json>\\n\\n`, ending `data: [DONE]`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec

from tandem.router.errors import RouterError

DONE = b"data: [DONE]\n\n"
_DONE_PAYLOAD = b"[DONE]"
_DONE_EVENT = DONE.rstrip()


def event(payload: Any) -> bytes:
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"


def payload_event(payload: bytes) -> bytes:
    """An event whose JSON is already encoded."""
    return b"data: " + payload + b"\n\n"


def error_event(error: RouterError) -> bytes:
    """What ends a stream that broke after it started: an OpenAI error object as the last event."""
    return b"data: " + error.body() + b"\n\n"


def ends_with_error(tail: bytes) -> bool:
    """Whether a stream's last bytes (`tail`: its last two chunks, say) end in an error object,
    alone or followed by `data: [DONE]`, as vLLM ends a stream that failed while generating
    (vllm/entrypoints/openai/completion/serving.py: the error event, then [DONE])."""
    events = tail.rstrip().rsplit(b"\n\n", 2)
    if len(events) > 1 and events[-1] == _DONE_EVENT:
        events.pop()
    return events[-1].startswith(b'data: {"error"')


async def replay(events: list[bytes]) -> AsyncIterator[bytes]:
    """A stream of events known in advance."""
    for item in events:
        yield item


class SseParser:
    """Splits a byte stream into the payloads of its `data:` lines, across arbitrary chunk borders."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        *blocks, self._buffer = self._buffer.replace(b"\r\n", b"\n").split(b"\n\n")
        payloads = []
        for block in blocks:
            data = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
            if data:
                payloads.append(b"\n".join(data))
        return payloads

    @staticmethod
    def is_done(payload: bytes) -> bool:
        return payload.strip() == _DONE_PAYLOAD
