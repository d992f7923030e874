"""The requests of a run, planned ahead: when each arrives and how many tokens it asks for.

Synthetic workloads draw arrivals from a rate schedule and lengths from two distributions, each from
its own random stream derived from the seed, so changing the lengths leaves the arrival times as
they were (and the other way round). A trace gives all three per request.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from tandem.load.lengths import Lengths
from tandem.load.schedule import RateSchedule, arrival_times
from tandem.load.trace import TraceEntry


@dataclass(frozen=True)
class Arrival:
    """One planned request: its number, arrival time (seconds from the start) and token counts."""

    index: int
    at_s: float
    prompt_tokens: int
    output_tokens: int


def synthetic(
    schedule: RateSchedule, prompts: Lengths, outputs: Lengths, seed: int, burstiness: float = 1.0
) -> Iterator[Arrival]:
    times = arrival_times(schedule, random.Random(f"{seed}:arrivals"), burstiness)
    prompt_rng, output_rng = random.Random(f"{seed}:prompts"), random.Random(f"{seed}:outputs")
    for index, at_s in enumerate(times):
        yield Arrival(index, at_s, prompts.sample(prompt_rng), outputs.sample(output_rng))


def replay(entries: Sequence[TraceEntry], speed: float = 1.0) -> Iterator[Arrival]:
    """The trace's requests, in order, at its times (from the run's start) divided by ``speed``."""
    if not speed > 0:
        raise ValueError(f"trace speed {speed} must be positive")
    for index, entry in enumerate(entries):
        yield Arrival(index, entry.t / speed, entry.prompt_tokens, entry.output_tokens)


def bounded(
    arrivals: Iterable[Arrival], max_requests: int | None, duration_s: float | None
) -> Iterator[Arrival]:
    """The arrivals before ``duration_s``, at most ``max_requests`` of them (None: no bound)."""
    within = itertools.takewhile(lambda a: duration_s is None or a.at_s < duration_s, arrivals)
    return itertools.islice(within, max_requests)
