"""Length distributions: their spelling, and draws that hit the mean and p90 they were given."""

from __future__ import annotations

import random
import statistics

import pytest

from tandem.api import TokenStats
from tandem.load.lengths import Fixed, LengthError, LogNormal, Uniform, from_token_stats, parse_lengths
from tandem.load.stats import percentile


@pytest.mark.parametrize(
    ("text", "lengths"),
    [
        ("512", Fixed(512)),
        ("mean=4000,p90=6000", LogNormal(4000, 6000)),
        (" mean = 300 , p90 = 450 ", LogNormal(300, 450)),
        ("mean=256", Fixed(256)),
        ("mean=256,p90=256", Fixed(256)),
        ("uniform=100-300", Uniform(100, 300)),
    ],
)
def test_lengths_are_spelled_as_a_workload_is(text: str, lengths: object) -> None:
    assert parse_lengths(text) == lengths


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0", "at least 1"),
        ("1.5", "whole number"),
        ("many", "not a number"),
        ("p90=10", "needs a mean"),
        ("mean=10,p90=5", "must not be below mean"),
        ("mean=1000,p90=3000", "but a log-normal's p90 is at most 2.27 times its mean"),
        ("mean=10,mean=20", "expected"),
        ("median=10", "expected"),
        ("uniform=300-100", "low end"),
        ("uniform=100", "range"),
        ("uniform=1-5,mean=3", "no other field"),
    ],
)
def test_bad_lengths_say_why(text: str, reason: str) -> None:
    with pytest.raises(LengthError, match=reason):
        parse_lengths(text)


@pytest.mark.parametrize(("mean", "p90"), [(4000, 6000), (1024, 2048), (200, 210)])
def test_lognormal_draws_hit_the_mean_and_p90(mean: int, p90: int) -> None:
    rng = random.Random(42)
    draws = [LogNormal(mean, p90).sample(rng) for _ in range(40_000)]
    assert statistics.fmean(draws) == pytest.approx(mean, rel=0.02)
    assert percentile(draws, 90) == pytest.approx(p90, rel=0.02)


def test_uniform_draws_cover_the_range_inclusively() -> None:
    rng = random.Random(1)
    draws = [Uniform(3, 7).sample(rng) for _ in range(2000)]
    assert set(draws) == {3, 4, 5, 6, 7}


def test_every_draw_is_at_least_one_token() -> None:
    rng = random.Random(0)
    assert min(LogNormal(2, 4).sample(rng) for _ in range(10_000)) >= 1


def test_a_pool_workload_means_the_distribution_the_planner_sizes_for() -> None:
    assert from_token_stats(TokenStats(mean=1024)) == Fixed(1024)
    assert from_token_stats(TokenStats(mean=1024, p90=1024)) == Fixed(1024)
    assert from_token_stats(TokenStats(mean=4000, p90=6000)) == LogNormal(4000, 6000)


def test_descriptions_parse_back() -> None:
    for lengths in (Fixed(7), LogNormal(4000, 6000), Uniform(1, 9)):
        assert parse_lengths(lengths.describe()) == lengths
