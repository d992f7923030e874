"""When requests arrive: a rate schedule of steps and ramps, and the open-loop arrival process on it.

A schedule is a sequence of segments, each holding a rate or ramping it linearly, written
``RATE:DURATION`` or ``START-END:DURATION`` and joined by commas: ``2:30s,2-10:1m,10:30s`` is
2 requests/s for 30 s, a ramp from 2 to 10 over a minute, then 10 requests/s for 30 s. A duration
is seconds, or a number with ``s``, ``m`` or ``h``.

Arrivals are a Poisson process whose rate follows the schedule (non-homogeneous), drawn by time
rescaling: the gaps of a unit-rate process, cumulated, are mapped through the inverse of the
cumulative rate Λ(t) = ∫ rate. ``burstiness`` b draws those unit-rate gaps from a gamma
distribution of shape b and mean 1, as ``vllm bench serve --burstiness`` does
(vllm/benchmarks/serve.py, ``get_request``: ``np.random.gamma(shape=burstiness, scale=1 /
(rate * burstiness))``): b = 1 is Poisson, b < 1 burstier, b > 1 more even. Unlike vLLM, the
draws are not rescaled to end exactly at ``count / rate``: the number of arrivals in a window is
random, as it is for real traffic.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([smh]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


class ScheduleError(ValueError):
    """A rate schedule that cannot be parsed or describes no traffic."""


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``1.5m`` or ``2h``."""
    match = _DURATION.match(text)
    if not match:
        raise ScheduleError(f"{text!r} is not a duration (seconds, or a number with s, m or h)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise ScheduleError(f"{text!r} is not a rate in requests/s") from None
    if not math.isfinite(rate) or rate < 0:
        raise ScheduleError(f"rate {text} must be a finite number of requests/s, 0 or more")
    return rate


@dataclass(frozen=True)
class Segment:
    """A rate ramping linearly from ``start_rate`` to ``end_rate`` (requests/s) over ``duration_s``."""

    start_rate: float
    end_rate: float
    duration_s: float

    def rate_at(self, offset_s: float) -> float:
        return self.start_rate + (self.end_rate - self.start_rate) * offset_s / self.duration_s

    def arrivals_until(self, offset_s: float) -> float:
        """Expected arrivals in the first ``offset_s`` seconds of the segment."""
        slope = (self.end_rate - self.start_rate) / self.duration_s
        return self.start_rate * offset_s + slope * offset_s * offset_s / 2

    @property
    def expected_arrivals(self) -> float:
        return (self.start_rate + self.end_rate) * self.duration_s / 2

    def offset_of(self, arrivals: float) -> float:
        """The offset where ``arrivals_until`` reaches ``arrivals`` (0 < arrivals ≤ expected_arrivals).

        Solves r0·τ + s·τ²/2 = y as τ = 2y / (r0 + √(r0² + 2sy)), stable for any slope s.
        """
        slope = (self.end_rate - self.start_rate) / self.duration_s
        root = math.sqrt(max(0.0, self.start_rate * self.start_rate + 2 * slope * arrivals))
        return min(self.duration_s, 2 * arrivals / (self.start_rate + root))


@dataclass(frozen=True)
class RateSchedule:
    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        if not self.segments:
            raise ScheduleError("a schedule needs at least one segment")
        if all(s.expected_arrivals == 0 for s in self.segments):
            raise ScheduleError("the schedule's rate is 0 throughout: no request would arrive")

    @classmethod
    def constant(cls, rate: float, duration_s: float = math.inf) -> RateSchedule:
        """``rate`` requests/s for ``duration_s`` (unbounded by default: bound the arrivals' count)."""
        if not rate > 0 or not math.isfinite(rate):
            raise ScheduleError(f"rate {rate} must be a positive finite number of requests/s")
        if not duration_s > 0:
            raise ScheduleError(f"duration {duration_s} s must be positive")
        return cls((Segment(rate, rate, duration_s),))

    @classmethod
    def parse(cls, text: str) -> RateSchedule:
        segments = []
        for part in text.split(","):
            rates, sep, duration = part.partition(":")
            if not sep:
                raise ScheduleError(f"segment {part.strip()!r} is not RATE:DURATION or START-END:DURATION")
            start, dash, end = rates.strip().partition("-")
            seconds = parse_duration(duration)
            if seconds <= 0:
                raise ScheduleError(f"segment {part.strip()!r}: the duration must be positive")
            segments.append(Segment(_rate(start), _rate(end) if dash else _rate(start), seconds))
        return cls(tuple(segments))

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.segments)

    @property
    def expected_arrivals(self) -> float:
        return sum(s.expected_arrivals for s in self.segments)

    def rate_at(self, t_s: float) -> float:
        """The scheduled rate at ``t_s`` (requests/s); 0 outside the schedule."""
        start = 0.0
        for segment in self.segments:
            if start <= t_s < start + segment.duration_s:
                return segment.rate_at(t_s - start)
            start += segment.duration_s
        return 0.0

    def time_of(self, arrivals: float) -> float | None:
        """The time at which the expected arrivals Λ(t) reach ``arrivals``; None past the schedule."""
        start = 0.0
        for segment in self.segments:
            if arrivals <= segment.expected_arrivals and segment.expected_arrivals > 0:
                return start + segment.offset_of(arrivals)
            arrivals -= segment.expected_arrivals
            start += segment.duration_s
        return None

    def describe(self) -> str:
        """``2 req/s for 30 s, then 2→10 req/s over 60 s``."""

        def one(s: Segment) -> str:
            if s.start_rate != s.end_rate:
                return f"{s.start_rate:g}→{s.end_rate:g} req/s over {s.duration_s:g} s"
            return f"{s.start_rate:g} req/s" + (
                "" if math.isinf(s.duration_s) else f" for {s.duration_s:g} s"
            )

        return ", then ".join(one(s) for s in self.segments)


def arrival_times(schedule: RateSchedule, rng: random.Random, burstiness: float = 1.0) -> Iterator[float]:
    """Arrival times (seconds from the start) of the open-loop process on ``schedule``, in order."""
    if not burstiness > 0 or not math.isfinite(burstiness):
        raise ScheduleError(f"burstiness {burstiness} must be a positive finite number")
    cumulative = 0.0
    while True:
        cumulative += rng.gammavariate(burstiness, 1 / burstiness)  # shape 1: exponential gaps
        t = schedule.time_of(cumulative)
        if t is None:
            return
        yield t
