"""Planned arrivals: traces replayed as written, synthetic ones reproducible, both bounded."""

from __future__ import annotations

import pytest

from tandem.load.lengths import Fixed, Uniform
from tandem.load.schedule import RateSchedule
from tandem.load.trace import TraceEntry, TraceError, parse_trace
from tandem.load.workload import Arrival, bounded, replay, synthetic

TRACE = """\
{"t": 0.0, "prompt_tokens": 100, "output_tokens": 10}

{"t": 2.5, "prompt_tokens": 300, "output_tokens": 30, "user": "ignored"}
{"t": 1.0, "prompt_tokens": 200, "output_tokens": 20}
"""


def test_a_trace_is_replayed_in_time_order_with_its_lengths() -> None:
    entries = parse_trace(TRACE.splitlines(), "trace.jsonl")
    assert list(replay(entries)) == [
        Arrival(0, 0.0, 100, 10),
        Arrival(1, 1.0, 200, 20),
        Arrival(2, 2.5, 300, 30),
    ]
    assert [a.at_s for a in replay(entries, speed=2)] == [0.0, 0.5, 1.25]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("not json", "trace.jsonl:2: not JSON"),
        ('{"t": -1, "prompt_tokens": 1, "output_tokens": 1}', "trace.jsonl:2: t: "),
        ('{"t": 1, "prompt_tokens": 0, "output_tokens": 1}', "trace.jsonl:2: prompt_tokens: "),
        ('{"t": 1, "prompt_tokens": 5}', "trace.jsonl:2: output_tokens: Field required"),
        ('{"t": NaN, "prompt_tokens": 1, "output_tokens": 1}', "trace.jsonl:2: t: "),
        ("[1, 2]", "trace.jsonl:2: line: "),
    ],
)
def test_a_bad_trace_line_is_named(line: str, reason: str) -> None:
    lines = ['{"t": 0, "prompt_tokens": 1, "output_tokens": 1}', line]
    with pytest.raises(TraceError, match=reason):
        parse_trace(lines, "trace.jsonl")


def test_an_empty_trace_is_an_error() -> None:
    with pytest.raises(TraceError, match="no entries"):
        parse_trace(["", "  "], "empty.jsonl")


def test_synthetic_arrivals_keep_their_times_when_the_lengths_change() -> None:
    schedule = RateSchedule.constant(10, 30)
    fixed = list(synthetic(schedule, Fixed(100), Fixed(10), seed=3))
    varied = list(synthetic(schedule, Uniform(1, 1000), Uniform(1, 50), seed=3))
    assert [a.at_s for a in fixed] == [a.at_s for a in varied]
    assert {a.prompt_tokens for a in fixed} == {100} and len({a.prompt_tokens for a in varied}) > 100
    assert [a.index for a in fixed] == list(range(len(fixed)))
    assert list(synthetic(schedule, Uniform(1, 1000), Uniform(1, 50), seed=3)) == varied
    assert list(synthetic(schedule, Uniform(1, 1000), Uniform(1, 50), seed=4)) != varied


def test_arrivals_are_bounded_in_count_and_time() -> None:
    arrivals = [Arrival(i, float(i), 1, 1) for i in range(10)]
    assert [a.index for a in bounded(arrivals, None, 4.0)] == [0, 1, 2, 3]
    assert [a.index for a in bounded(arrivals, 3, None)] == [0, 1, 2]
    assert [a.index for a in bounded(arrivals, 3, 2.0)] == [0, 1]
    assert len(list(bounded(arrivals, None, None))) == 10


def test_bounding_stops_an_endless_process() -> None:
    endless = synthetic(RateSchedule.constant(100.0), Fixed(1), Fixed(1), seed=0)
    assert len(list(bounded(endless, 500, None))) == 500


def test_trace_entries_take_extra_keys_but_not_bad_values() -> None:
    assert TraceEntry.model_validate({"t": 1, "prompt_tokens": 2, "output_tokens": 3, "x": 1}).t == 1
