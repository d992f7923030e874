"""Optional API keys: `Authorization: Bearer <key>`, keys read from a file (a mounted Secret)."""

from __future__ import annotations

import hmac
from pathlib import Path

from tandem.router.errors import UnauthorizedError


def load_api_keys(path: Path) -> tuple[bytes, ...]:
    """One key per line; blank lines and `#` comments are skipped. An empty file is an error: it
    would lock every client out."""
    keys = tuple(
        line.strip().encode()
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not keys:
        raise ValueError(f"{path} holds no API key")
    return keys


class ApiKeys:
    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self._keys = keys

    def check(self, authorization: bytes | None) -> None:
        scheme, _, token = (authorization or b"").partition(b" ")
        token = token.strip()
        # Compare against every key, so the time taken says nothing about which one nearly matched.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(token, key)
        if scheme.lower() != b"bearer" or not token or not matched:
            raise UnauthorizedError("Missing or invalid API key.", code="invalid_api_key")
