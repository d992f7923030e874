"""Token-length distributions for prompts and outputs, and their command-line spelling.

``512``: every request 512 tokens. ``mean=4000,p90=6000``: log-normal with that mean and p90, the
distribution an InferencePool's ``workload`` describes and the planner sizes for
(:mod:`tandem.api.lengths`); without ``p90`` every request has the mean. ``uniform=100-300``:
uniform integers from 100 to 300 inclusive. Every draw is at least 1 token.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from tandem.api import TokenStats
from tandem.api.lengths import lognormal_mu, lognormal_sigma, p90_problem


class LengthError(ValueError):
    """A length distribution that cannot be parsed or has no valid draw."""


@dataclass(frozen=True)
class Fixed:
    tokens: int

    def sample(self, rng: random.Random) -> int:
        return self.tokens

    def describe(self) -> str:
        return str(self.tokens)


@dataclass(frozen=True)
class LogNormal:
    mean: float
    p90: float

    @property
    def sigma(self) -> float:
        return lognormal_sigma(self.mean, self.p90)

    def sample(self, rng: random.Random) -> int:
        sigma = self.sigma
        return max(1, round(rng.lognormvariate(lognormal_mu(self.mean, sigma), sigma)))

    def describe(self) -> str:
        return f"mean={self.mean:g},p90={self.p90:g}"


@dataclass(frozen=True)
class Uniform:
    low: int
    high: int

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.low, self.high)

    def describe(self) -> str:
        return f"uniform={self.low}-{self.high}"


Lengths = Fixed | LogNormal | Uniform


def from_token_stats(stats: TokenStats) -> Lengths:
    """The distribution an InferencePool's ``workload.prompt_tokens`` / ``output_tokens`` describes."""
    if stats.p90 is None or stats.p90 == stats.mean:
        return Fixed(stats.mean)
    return LogNormal(stats.mean, stats.p90)


def _count(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LengthError(f"{what} {text!r} is not a number of tokens") from None
    if not math.isfinite(value) or value < 1:
        raise LengthError(f"{what} {text} must be at least 1 token")
    return value


def parse_lengths(text: str) -> Lengths:
    """``N``, ``mean=N[,p90=M]`` or ``uniform=A-B`` (see the module docstring)."""
    text = text.strip()
    if "=" not in text:
        value = _count(text, "length")
        if value != int(value):
            raise LengthError(f"length {text} must be a whole number of tokens")
        return Fixed(int(value))
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, field = part.partition("=")
        key = key.strip()
        if not sep or key not in ("mean", "p90", "uniform") or key in fields:
            raise LengthError(f"{text!r}: expected N, mean=N[,p90=M] or uniform=A-B")
        fields[key] = field.strip()
    if "uniform" in fields:
        if len(fields) > 1:
            raise LengthError(f"{text!r}: uniform=A-B takes no other field")
        low, dash, high = fields["uniform"].partition("-")
        if not dash:
            raise LengthError(f"{text!r}: uniform needs a range A-B")
        bounds = int(_count(low, "uniform low")), int(_count(high, "uniform high"))
        if bounds[0] > bounds[1]:
            raise LengthError(f"{text!r}: the range's low end is above its high end")
        return Uniform(*bounds)
    if "mean" not in fields:
        raise LengthError(f"{text!r}: a p90 needs a mean")
    mean = _count(fields["mean"], "mean")
    if "p90" not in fields:
        return Fixed(round(mean))
    p90 = _count(fields["p90"], "p90")
    problem = p90_problem(mean, p90)
    if problem is not None:
        raise LengthError(f"{text!r}: {problem}")
    return LogNormal(mean, p90) if p90 > mean else Fixed(round(mean))
