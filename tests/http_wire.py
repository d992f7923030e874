"""Raw HTTP/1.x over a socket, for the tests of what a server does before any client library would
let a request through: oversized and stalled heads, half-sent bodies, HTTP/1.0."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value
    body: bytes  # as it came on the wire: chunk framing, if any, left in


def parse_response(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), headers, body)


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return await asyncio.open_connection(parts.hostname, parts.port)


async def read_to_close(reader: asyncio.StreamReader, within_s: float = 30) -> bytes:
    """Everything until the server closes (a reset after an answer counts as a close)."""
    chunks = []
    async with asyncio.timeout(within_s):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


async def exchange(url: str, *parts: bytes, within_s: float = 30) -> RawResponse:
    """Send `parts` (one write each, so a head can arrive in pieces) while reading the answer, and
    return it once the server closes. A server that answers before the client has sent everything
    (a refusal) may stop reading: what could not be sent is given up."""
    reader, writer = await connect(url)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            for part in parts:
                writer.write(part)
                await writer.drain()

    sending = asyncio.create_task(send())
    try:
        data = await read_to_close(reader, within_s)
    finally:
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return parse_response(data)
