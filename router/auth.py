"""Optional API keys: `Authorization: Bearer <key>`, keys read from a file (a mounted Secret).

The file holds one key per line; blank lines and `#` comments are skipped. A key may be followed,
after white space, by the grants it carries: `priority`, which lets its clients set the admission
headers (`x-tandem-priority`, `x-tandem-ttft-ms`: client_hints.py), and `tokens=N/PERIOD`, a token
budget of N tokens per minute, hour or day (token_budget.py)::

    # batch jobs, at most two million tokens a day
    sk-batch-4f1c tokens=2000000/day
    # the interactive front end may jump the queue
    sk-front-9a2e priority

A file of bare keys reads as before. Bearer tokens hold no white space (RFC 6750 §2.1), so a word
after one is a grant, never part of the key. Keys are secrets: no message here quotes one.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

from tandem.router.errors import UnauthorizedError
from tandem.router.token_budget import TokenBudget

PRIORITY_GRANT = "priority"
TOKENS_GRANT = "tokens="
_GRANTS = frozenset({PRIORITY_GRANT})


@dataclass(frozen=True, slots=True)
class Caller:
    """What the request's key allows."""

    may_set_priority: bool = False
    budget: TokenBudget | None = field(default=None, compare=False)  # the key's tokens per period


def _budget(grant: str, path: Path, number: int) -> TokenBudget:
    limit, _, period = grant.removeprefix(TOKENS_GRANT).partition("/")
    try:
        return TokenBudget(int(limit), period)
    except ValueError as exc:
        raise ValueError(f"{path} line {number}: {exc}") from None


ANONYMOUS = Caller()


def load_api_keys(path: Path) -> tuple[tuple[bytes, Caller], ...]:
    """The keys and what each allows. An empty file is an error (it would lock every client out),
    and so is an unknown grant (a typo would silently grant nothing)."""
    keys: dict[bytes, Caller] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, *grants = line.split()
        budgets = [_budget(g, path, number) for g in grants if g.startswith(TOKENS_GRANT)]
        unknown = {g for g in grants if not g.startswith(TOKENS_GRANT)} - _GRANTS
        if unknown:
            # Name the line, not the words: a key with a space in it would be half quoted.
            known = [*sorted(_GRANTS), "tokens=N/PERIOD"]
            raise ValueError(f"{path} line {number}: unknown grant after the key (known: {known})")
        # A key listed twice has the grants of both lines; one token budget at most.
        before = keys.get(key.encode(), ANONYMOUS)
        if len(budgets) + (before.budget is not None) > 1:
            raise ValueError(f"{path} line {number}: a key has one token budget at most")
        keys[key.encode()] = Caller(
            may_set_priority=before.may_set_priority or PRIORITY_GRANT in grants,
            budget=before.budget or (budgets[0] if budgets else None),
        )
    if not keys:
        raise ValueError(f"{path} holds no API key")
    return tuple(keys.items())


class ApiKeys:
    def __init__(self, keys: tuple[tuple[bytes, Caller], ...]) -> None:
        self._keys = keys

    def check(self, authorization: bytes | None) -> Caller:
        """What the key in an Authorization header allows; UnauthorizedError without a known key."""
        scheme, _, token = (authorization or b"").partition(b" ")
        token = token.strip()
        # Compare against every key, so the time taken says nothing about which one nearly matched.
        caller: Caller | None = None
        for key, grants in self._keys:
            if hmac.compare_digest(token, key):
                caller = grants
        if scheme.lower() != b"bearer" or not token or caller is None:
            raise UnauthorizedError("Missing or invalid API key.", code="invalid_api_key")
        return caller
