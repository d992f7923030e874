"""The queueing and length-distribution approximations the sizing rests on."""

from __future__ import annotations

import math

import pytest

from tandem.api import TokenStats
from tandem.api.lengths import lognormal_sigma
from tandem.planner.lengths import LengthDistribution
from tandem.planner.queueing import max_utilisation, wait_percentile_ms


def test_wait_percentile_is_exact_for_exponential_service() -> None:
    # M/M/1: P(W > t) = rho exp(-(mu - lambda) t); E[S^2] = 2 E[S]^2 for exponential service.
    mean, rho, p = 100.0, 0.8, 90.0
    mu, lam = 1 / mean, rho / mean
    exact = math.log(rho / (1 - p / 100)) / (mu - lam)
    assert wait_percentile_ms(rho, mean, 2 * mean * mean, p) == pytest.approx(exact, rel=1e-12)


def test_no_wait_below_the_tail_and_unbounded_at_saturation() -> None:
    assert wait_percentile_ms(0.05, 100, 2e4, 90) == 0
    assert wait_percentile_ms(1.0, 100, 2e4, 90) == math.inf


def test_max_utilisation_meets_its_budget_and_grows_with_it() -> None:
    tight = max_utilisation(100, 2e4, 90, 200)
    loose = max_utilisation(100, 2e4, 90, 2000)
    assert 0 < tight < loose < 1
    assert wait_percentile_ms(tight, 100, 2e4, 90) <= 200 + 1e-6


def test_lognormal_lengths_keep_mean_and_p90() -> None:
    lengths = LengthDistribution.from_stats(TokenStats(mean=2000, p90=4000))
    assert sum(lengths.points) / len(lengths.points) == pytest.approx(2000, rel=0.01)
    assert lengths.quantile(90) == pytest.approx(4000, rel=0.01)
    assert lengths.longest > 4000


def test_lengths_without_p90_are_fixed_and_prefix_reuse_scales_them() -> None:
    fixed = LengthDistribution.from_stats(TokenStats(mean=1000), scale=0.25)
    assert set(fixed.points) == {250} and fixed.quantile(99) == 250
    assert fixed.attention_span == pytest.approx(125)


def test_an_unfittable_spread_is_refused_and_the_largest_one_has_sigma_z90() -> None:
    # A p90 beyond 2.27 x the mean fits no log-normal (it was capped to sigma = z90 silently).
    with pytest.raises(ValueError, match="at most 2273"):
        lognormal_sigma(1000, 10_000)
    assert lognormal_sigma(1000, 2273) == pytest.approx(1.2816, abs=0.02)
