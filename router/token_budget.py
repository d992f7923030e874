"""Per-API-key token budgets: `KEY tokens=N/PERIOD` in the keys file (auth.py) gives the key N
tokens per minute, hour or day.

A budget is a bucket of N tokens that refills continuously at N per period (so no window edge lets
a key spend 2N in a moment). A request is charged on arrival, before it queues, by the router's
estimate: the prompt's tokens (chars / 4, or its token ids) and the answer tokens it asks for
(`max_tokens`; completions: 16 when absent, as vLLM; a chat request without a limit is charged its
prompt only). What the bucket cannot cover is refused with 429 (`TokenBudgetError`, OpenAI's
`rate_limit_exceeded` shape) and a Retry-After of when it could; nothing is charged for a refusal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from tandem.router.errors import TokenBudgetError

PERIODS_S = {"minute": 60.0, "hour": 3600.0, "day": 86400.0}


class TokenBudget:
    __slots__ = ("_clock", "_level", "_rate", "_stamp", "limit", "period")

    def __init__(self, limit: int, period: str, clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1 or period not in PERIODS_S:
            periods = sorted(PERIODS_S)
            raise ValueError(f"a token budget is tokens=N/PERIOD, N ≥ 1 and PERIOD one of {periods}")
        self.limit, self.period = limit, period
        self._rate = limit / PERIODS_S[period]  # tokens a second
        self._clock = clock
        self._level = float(limit)
        self._stamp = clock()

    def charge(self, tokens: int) -> None:
        """Take `tokens` from the bucket, or raise TokenBudgetError (taking nothing)."""
        now = self._clock()
        level = min(float(self.limit), self._level + (now - self._stamp) * self._rate)
        self._stamp = now
        if tokens <= level:
            self._level = level - tokens
            return
        self._level = level
        if tokens > self.limit:
            raise TokenBudgetError(
                f"Request too large for this key's token budget: limit {self.limit} per {self.period}, "
                f"requested {tokens}. Ask for fewer tokens (`max_tokens`) or send a shorter prompt.",
                retry_after_s=None,
            )
        wait = math.ceil((tokens - level) / self._rate)
        raise TokenBudgetError(
            f"This key's token budget is spent: limit {self.limit} per {self.period}, "
            f"{int(level)} left, requested {tokens}. Please try again in {wait} s.",
            retry_after_s=wait,
        )
