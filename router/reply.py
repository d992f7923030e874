"""What the data path hands back to the HTTP layer: a whole body or a byte stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"


@dataclass
class Reply:
    status: int
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None  # when set, the body is streamed from it instead
    content_type: str = JSON_CONTENT_TYPE
    headers: dict[str, str] = field(default_factory=dict)
