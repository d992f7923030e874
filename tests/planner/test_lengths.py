"""The planner's length distributions: the quadrature its service moments come from reaches the
tail that quantile points miss (issue #16)."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest

from tandem.api import TokenStats
from tandem.api.lengths import MAX_P90_RATIO, lognormal_mu, most_p90
from tandem.planner.lengths import LengthDistribution

NORMAL = NormalDist()


def _truncated_moment(d: LengthDistribution, n: int, limit: float) -> float:
    """E[L^n | L <= limit] of the log-normal, in closed form."""
    mu, s = lognormal_mu(d.mean, d.sigma), d.sigma
    z = (math.log(limit) - mu) / s
    return math.exp(n * mu + n * n * s * s / 2) * NORMAL.cdf(z - n * s) / NORMAL.cdf(z)


@pytest.mark.parametrize(("p90", "limit"), [(3000, 131072), (4000, 40760), (4546, 40760)])
def test_the_served_quadrature_has_the_truncated_log_normals_moments(p90: int, limit: int) -> None:
    d = LengthDistribution.from_stats(TokenStats(mean=2000, p90=p90))
    nodes = d.served_quadrature(limit)
    assert sum(w for _, w in nodes) == pytest.approx(1) and max(length for length, _ in nodes) <= limit
    for n in (1, 2, 4):  # a prefill's second moment grows as the fourth power (quadratic attention)
        assert sum(length**n * w for length, w in nodes) == pytest.approx(
            _truncated_moment(d, n, limit), rel=0.02
        )


def test_quantile_points_miss_the_tail_that_sets_the_second_moment() -> None:
    """With the largest p90 of the mean (2.27 times it, sigma = z90) the 16 points end at 10708 tokens and
    give a third of the fourth moment of prompts up to 40760 tokens; the quadrature gives it."""
    d = LengthDistribution.from_stats(TokenStats(mean=2000, p90=most_p90(2000)))
    points = sum(x**4 for x in d.points) / len(d.points)
    assert points < _truncated_moment(d, 4, 40760) / 3


def test_a_fixed_length_is_one_node_unless_the_context_refuses_it() -> None:
    d = LengthDistribution.from_stats(TokenStats(mean=2000))
    assert d.served_quadrature(4096) == ((2000, 1.0),) and d.served_quadrature(None) == ((2000, 1.0),)
    assert d.served_quadrature(1000) == ()


@pytest.mark.parametrize(("mean", "p90"), [(2000, 4547), (2000, 6000), (300, 800)])
def test_a_p90_beyond_a_log_normals_reach_is_refused_naming_values_and_limit(mean: int, p90: int) -> None:
    """A log-normal's p90 / mean is at most e^(z90^2 / 2) = 2.2732 (at sigma = z90): before, such a
    p90 was fitted silently to a distribution with a shorter tail."""
    with pytest.raises(
        ValueError, match=rf"p90 \({p90}\) is .* times mean \({mean}\).* at most 2\.27"
    ) as refused:
        TokenStats(mean=mean, p90=p90)
    assert f"at most {math.floor(mean * MAX_P90_RATIO)}" in str(refused.value)


def test_the_largest_p90_a_mean_allows_fits_a_log_normal_with_that_p90() -> None:
    largest = most_p90(2000)
    assert largest == 4546
    d = LengthDistribution.from_stats(TokenStats(mean=2000, p90=largest))
    assert d.sigma == pytest.approx(1.2816, abs=0.02) and d.quantile(90) == pytest.approx(largest, rel=1e-3)
