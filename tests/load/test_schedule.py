"""Rate schedules and the open-loop arrival process on them, with seeded random streams."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from tandem.load.schedule import RateSchedule, ScheduleError, Segment, arrival_times, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("1.5m", 90.0), ("2h", 7200.0), ("0.25", 0.25)]
)
def test_durations_take_seconds_minutes_and_hours(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "segments"),
    [
        ("5:60", [Segment(5, 5, 60)]),
        ("2:30s,2-10:1m,10:30s", [Segment(2, 2, 30), Segment(2, 10, 60), Segment(10, 10, 30)]),
        ("0-4:10, 0:5", [Segment(0, 4, 10), Segment(0, 0, 5)]),
    ],
)
def test_a_schedule_is_steps_and_ramps(text: str, segments: list[Segment]) -> None:
    assert list(RateSchedule.parse(text).segments) == segments


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("5", "RATE:DURATION"),
        ("five:10", "not a rate"),
        ("-1:10", "not a rate"),  # "-1" splits as a ramp from "" to 1
        ("5:0", "must be positive"),
        ("5:ten", "not a duration"),
        ("inf:10", "finite"),
        ("0:10", "rate is 0 throughout"),
    ],
)
def test_a_bad_schedule_says_why(text: str, reason: str) -> None:
    with pytest.raises(ScheduleError, match=reason):
        RateSchedule.parse(text)


def test_rate_follows_steps_and_ramps_and_is_zero_after_the_end() -> None:
    schedule = RateSchedule.parse("2:10,2-10:20,4:10")
    assert [schedule.rate_at(t) for t in (0, 9.9, 10, 20, 29.9999, 30, 39.9, 40, 100)] == pytest.approx(
        [2, 2, 2, 6, 10, 4, 4, 0, 0], abs=1e-3
    )
    assert schedule.duration_s == 40
    assert schedule.expected_arrivals == 20 + 120 + 40


@pytest.mark.parametrize("text", ["3:10", "0-8:10", "8-0:10", "1:5,1-9:10,9-2:5,0:3,4:2"])
def test_time_of_inverts_the_cumulative_rate(text: str) -> None:
    schedule = RateSchedule.parse(text)
    start = 0.0
    for segment in schedule.segments:
        for fraction in (0.1, 0.5, 0.9, 1.0):
            offset = fraction * segment.duration_s
            before = sum(s.expected_arrivals for s in schedule.segments[: schedule.segments.index(segment)])
            if segment.expected_arrivals > 0:
                assert schedule.time_of(before + segment.arrivals_until(offset)) == pytest.approx(
                    start + offset
                )
        start += segment.duration_s
    assert schedule.time_of(schedule.expected_arrivals + 1e-9) is None


def test_poisson_arrivals_have_the_rate_and_exponential_gaps() -> None:
    rate, duration = 20.0, 500.0
    times = list(arrival_times(RateSchedule.constant(rate, duration), random.Random(7)))
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    # 10,000 expected arrivals: the count's standard deviation is 100.
    assert abs(len(times) - rate * duration) < 300
    assert times == sorted(times) and times[-1] < duration
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.03)
    # Exponential: the standard deviation equals the mean, and P(gap > mean) = 1/e.
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.04)
    assert sum(g > 1 / rate for g in gaps) / len(gaps) == pytest.approx(math.exp(-1), abs=0.02)


@pytest.mark.parametrize("burstiness", [0.25, 4.0])
def test_burstiness_is_the_gamma_shape_of_the_gaps(burstiness: float) -> None:
    """vLLM draws gaps from gamma(shape=b, scale=1/(rate*b)): mean 1/rate, coefficient of variation 1/√b
    (vllm/benchmarks/serve.py, get_request)."""
    rate = 10.0
    times = list(arrival_times(RateSchedule.constant(rate, 1000.0), random.Random(3), burstiness))
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    assert statistics.fmean(gaps) == pytest.approx(1 / rate, rel=0.05)
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(
        1 / math.sqrt(burstiness), rel=0.06
    )


def test_each_step_gets_its_own_rate() -> None:
    schedule = RateSchedule.parse("5:200,20:200,0:50,10:100")
    times = list(arrival_times(schedule, random.Random(11)))
    counts = [sum(lo <= t < hi for t in times) for lo, hi in ((0, 200), (200, 400), (400, 450), (450, 550))]
    # Expected 1000, 4000, 0, 1000 (standard deviations about 32, 63, 0, 32).
    assert abs(counts[0] - 1000) < 130 and abs(counts[1] - 4000) < 250 and counts[2] == 0
    assert abs(counts[3] - 1000) < 130


def test_a_ramp_arrives_at_its_rising_rate() -> None:
    times = list(arrival_times(RateSchedule.parse("0-40:400"), random.Random(5)))
    # rate(t) = t / 10: expected arrivals in [0, 200) are 2000 and in [200, 400) 6000.
    first, second = sum(t < 200 for t in times), sum(t >= 200 for t in times)
    assert abs(first - 2000) < 200 and abs(second - 6000) < 350


def test_the_same_seed_gives_the_same_arrivals() -> None:
    schedule = RateSchedule.parse("3:20,3-9:20")
    assert list(arrival_times(schedule, random.Random(1))) == list(arrival_times(schedule, random.Random(1)))
    assert list(arrival_times(schedule, random.Random(1))) != list(arrival_times(schedule, random.Random(2)))


def test_an_unbounded_constant_rate_goes_on() -> None:
    times = arrival_times(RateSchedule.constant(1000.0), random.Random(0))
    assert len([next(times) for _ in range(10_000)]) == 10_000


@pytest.mark.parametrize("burstiness", [0.0, -1.0, math.inf, math.nan])
def test_burstiness_must_be_positive_and_finite(burstiness: float) -> None:
    with pytest.raises(ScheduleError, match="burstiness"):
        next(arrival_times(RateSchedule.constant(1, 10), random.Random(0), burstiness))


def test_a_schedule_describes_itself_in_words() -> None:
    assert RateSchedule.parse("2:30,2-10:60").describe() == "2 req/s for 30 s, then 2→10 req/s over 60 s"
    assert RateSchedule.constant(5).describe() == "5 req/s"
