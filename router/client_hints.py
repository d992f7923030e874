"""What a client's headers may ask of admission, and when the router believes them.

`x-tandem-priority` (an integer, lower first, like vLLM's `priority`) orders the `priority` queue;
`x-tandem-ttft-ms` (the request's own time-to-first-token target) sets its deadline in the `slo`
queue. Believed from anyone, either lets every client jump every queue, so they count only where
the pool trusts its clients (`spec.router.trustClientPriority`, `--trust-client-priority`) or the
request's API key carries the `priority` grant (auth.py). Anywhere else they are ignored, like
any header the router has no use for: the request is served as if they were absent.

A believed value must be a plain decimal number within bounds: `nan`, `inf`, `1e300`, `0x10`,
`1_000` or a priority beyond ±PRIORITY_LIMIT get a 400 rather than a place at the head of the queue.
"""

from __future__ import annotations

import re

from tandem.router.errors import BadRequestError

PRIORITY_LIMIT = 1_000_000
MAX_TTFT_MS = 3_600_000.0  # an hour: a target beyond it is no target
_INTEGER = re.compile(rb"[+-]?[0-9]{1,7}")
_DECIMAL = re.compile(rb"[0-9]{1,7}(?:\.[0-9]{1,6})?")


def priority(value: bytes | None, header: str) -> int:
    """The priority a believed header asks for (0 without one)."""
    if value is None:
        return 0
    text = value.strip()
    if not _INTEGER.fullmatch(text) or abs(int(text)) > PRIORITY_LIMIT:
        raise BadRequestError(
            f"{header} must be an integer from {-PRIORITY_LIMIT} to {PRIORITY_LIMIT}", code="invalid_header"
        )
    return int(text)


def ttft_ms(value: bytes | None, header: str) -> float | None:
    """The TTFT target a believed header asks for, in milliseconds (None without one)."""
    if value is None:
        return None
    text = value.strip()
    if not _DECIMAL.fullmatch(text) or not 0 < float(text) <= MAX_TTFT_MS:
        raise BadRequestError(
            f"{header} must be a number of milliseconds above 0 and at most {MAX_TTFT_MS:.0f}",
            code="invalid_header",
        )
    return float(text)
