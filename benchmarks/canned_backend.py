"""An engine that costs next to nothing, for the router benchmarks: every request (a POST with a
Content-Length body) gets one canned completion, a fixed HTTP/1.1 answer from a bare protocol.

Imported by module name, as the benchmarks run as scripts from this folder.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

CANNED = (
    b'{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,'
    b'"text":" Hello there","finish_reason":"length","logprobs":null}],'
    b'"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}'
)
BODY = '{"model":"m","prompt":"Say hello","max_tokens":2}'  # a request the canned completion answers
_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(CANNED)


class Canned(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            header, _, rest = self.buffer.partition(b"\r\n\r\n")
            match = re.search(rb"(?i)content-length:\s*(\d+)", header)
            length = int(match.group(1)) if match else 0
            if len(rest) < length:
                return
            self.buffer = rest[length:]
            self.transport.write(_HEAD + CANNED)


async def canned_server(port: int) -> asyncio.Server:
    """The canned engine on 127.0.0.1:`port`, serving in this event loop."""
    return await asyncio.get_running_loop().create_server(Canned, "127.0.0.1", port, backlog=1024)
