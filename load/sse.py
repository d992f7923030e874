"""Server-sent events, decoded from a stream's bytes (the WHATWG rules a streamed OpenAI answer follows).

Lines end with ``\\n``, ``\\r\\n`` or ``\\r``. An event's ``data:`` lines are joined with newlines and
delivered at the blank line that ends the event; comment lines (``:``, often keep-alive pings) and
other fields (``event:``, ``id:``) carry no data. One leading space after the colon is not part of
the value. Lines have no length limit (a long chunk is one long line).

This runs once per streamed chunk in the load client: lines are split without a regular expression
when the bytes hold no ``\\r`` (what vLLM sends), and only ``data`` lines are decoded to text.
"""

from __future__ import annotations

import re

_LINE_END = re.compile(rb"\r\n|\r|\n")


class SseDecoder:
    def __init__(self) -> None:
        self._data: list[str] = []
        self._pending = b""  # the start of a line whose end has not arrived
        self._after_cr = False  # the last bytes ended with "\r": a "\n" next completes that line end

    def feed(self, chunk: bytes) -> list[str]:
        """Take the next bytes of the stream; the data of every event they complete."""
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._after_cr = chunk.endswith(b"\r")
        buffer = self._pending + chunk if self._pending else chunk
        parts = _LINE_END.split(buffer) if b"\r" in buffer else buffer.split(b"\n")
        self._pending = parts.pop()
        events = []
        for part in parts:
            data = self._line(part)
            if data is not None:
                events.append(data)
        return events

    def _line(self, line: bytes) -> str | None:
        """Take one line (without its line ending); the event's data when the line ends an event."""
        if not line:
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        if line.startswith(b"data"):
            field, _, value = line.partition(b":")
            if field == b"data":
                self._data.append(value.removeprefix(b" ").decode(errors="replace"))
        return None

    def close(self) -> str | None:
        """The data of a last event the stream ended without a blank line after."""
        if self._pending:
            self._line(self._pending)
            self._pending = b""
        return self._line(b"")
