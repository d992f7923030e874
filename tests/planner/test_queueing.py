"""The queueing and length-distribution approximations the sizing rests on."""

from __future__ import annotations

import math

import pytest

from tandem.api import TokenStats
from tandem.api.lengths import lognormal_sigma
from tandem.planner.lengths import LengthDistribution
from tandem.planner.queueing import erlang_c, max_utilisation, mean_wait_ms, wait_percentile_ms


def test_wait_percentile_is_exact_for_exponential_service() -> None:
    # M/M/1: P(W > t) = rho exp(-(mu - lambda) t); E[S^2] = 2 E[S]^2 for exponential service.
    mean, rho, p = 100.0, 0.8, 90.0
    mu, lam = 1 / mean, rho / mean
    exact = math.log(rho / (1 - p / 100)) / (mu - lam)
    assert wait_percentile_ms(rho, mean, 2 * mean * mean, p) == pytest.approx(exact, rel=1e-12)


def test_erlang_c_is_the_textbook_sum() -> None:
    # C(c, a) = (a^c / c!) (c / (c - a)) / (sum_{k<c} a^k / k! + (a^c / c!) (c / (c - a))).
    for servers, rho in ((1, 0.3), (2, 0.5), (4, 0.8), (16, 0.9), (40, 0.7)):
        a = servers * rho
        top = a**servers / math.factorial(servers) * servers / (servers - a)
        exact = top / (sum(a**k / math.factorial(k) for k in range(servers)) + top)
        assert erlang_c(servers, rho) == pytest.approx(exact, rel=1e-9)


def test_pooled_wait_is_exact_for_exponential_service() -> None:
    # M/M/c: P(W > t) = C exp(-(c mu - lambda) t), E[W] = C / (c mu - lambda).
    mean, rho, p, servers = 100.0, 0.8, 90.0, 4
    mu, lam = 1 / mean, servers * rho / mean
    waits = erlang_c(servers, rho)
    assert mean_wait_ms(rho, mean, 2 * mean * mean, servers) == pytest.approx(waits / (servers * mu - lam))
    exact = math.log(waits / (1 - p / 100)) / (servers * mu - lam)
    assert wait_percentile_ms(rho, mean, 2 * mean * mean, p, servers) == pytest.approx(exact, rel=1e-12)


def test_one_server_is_pollaczek_khinchine_and_more_servers_wait_less() -> None:
    mean, second, rho = 100.0, 3e4, 0.85
    assert mean_wait_ms(rho, mean, second, 1) == pytest.approx(rho / mean * second / (2 * (1 - rho)))
    waits = [wait_percentile_ms(rho, mean, second, 90, c) for c in (1, 2, 4, 8, 64)]
    assert waits == sorted(waits, reverse=True) and waits[-1] < waits[0]
    # A large pool: the recursion stays finite (a^c / c! would overflow a float).
    assert 0 <= wait_percentile_ms(0.99, mean, second, 90, 50_000) < math.inf


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
