"""Queueing approximations for sizing: M/G/1 waiting time at a percentile, alone or with a latency.

Requests arrive as a Poisson stream; one replica serves them one after another with service times
S. Pollaczek-Khinchine gives the mean wait E[W] = lambda E[S^2] / (2 (1 - rho)); its tail is taken
as exponential with the M/M/1 shape, P(W > t) = rho exp(-rho t / E[W]), so the p-th percentile is
E[W] / rho * ln(rho / (1 - p)) (zero while rho <= 1 - p).

A request's time to first token is its wait plus its own latency (its prefill and what follows):
the sizing adds their percentiles, exact when the two rise together. They do in an aggregated
replica: a long queue comes with more sequences decoding, smaller chunks and slower steps for the
prompt's own prefill too (the twin, sim/twin.py, puts independent sums 15-30 % low).
"""

from __future__ import annotations

import math

# 40 halvings resolve a rate or a count to 1e-12 of its range.
BISECTION_STEPS = 40
# A utilisation to 1e-7: finer than any rate the plan reports.
UTILISATION_BISECTION_STEPS = 24


def mean_wait_ms(rho: float, mean_service_ms: float, second_moment_ms2: float) -> float:
    """Pollaczek-Khinchine: E[W] = lambda E[S^2] / (2 (1 - rho)), infinite at rho >= 1."""
    if rho <= 0:
        return 0.0
    if rho >= 1:
        return math.inf
    return rho / mean_service_ms * second_moment_ms2 / (2 * (1 - rho))


def wait_percentile_ms(
    rho: float, mean_service_ms: float, second_moment_ms2: float, percentile: float
) -> float:
    """The percentile of the queueing delay at utilisation `rho` (infinite at rho >= 1)."""
    if rho <= 0:
        return 0.0
    if rho >= 1:
        return math.inf
    tail = 1 - percentile / 100
    if rho <= tail:
        return 0.0
    return mean_wait_ms(rho, mean_service_ms, second_moment_ms2) / rho * math.log(rho / tail)


def max_utilisation(
    mean_service_ms: float, second_moment_ms2: float, percentile: float, budget_ms: float
) -> float:
    """The largest utilisation whose queueing delay at `percentile` stays within `budget_ms`.

    The delay grows with utilisation, so bisection finds it.
    """
    if budget_ms < 0:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(UTILISATION_BISECTION_STEPS):
        mid = (low + high) / 2
        if wait_percentile_ms(mid, mean_service_ms, second_moment_ms2, percentile) <= budget_ms:
            low = mid
        else:
            high = mid
    return low
