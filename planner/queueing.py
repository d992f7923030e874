"""Queueing approximations for sizing: M/G/1 waiting time at a percentile.

Requests arrive as a Poisson stream; one replica serves them one after another with service times
S. Pollaczek-Khinchine gives the mean wait E[W] = lambda E[S^2] / (2 (1 - rho)); its tail is taken
as exponential with the M/M/1 shape, P(W > t) = rho exp(-rho t / E[W]), so the p-th percentile is
E[W] / rho * ln(rho / (1 - p)) (zero while rho <= 1 - p).
"""

from __future__ import annotations

import math

# 40 halvings resolve a rate or a count to 1e-12 of its range.
BISECTION_STEPS = 40


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
    arrival_rate = rho / mean_service_ms
    mean_wait = arrival_rate * second_moment_ms2 / (2 * (1 - rho))
    return mean_wait / rho * math.log(rho / tail)


def max_utilisation(
    mean_service_ms: float, second_moment_ms2: float, percentile: float, budget_ms: float
) -> float:
    """The largest utilisation whose queueing delay at `percentile` stays within `budget_ms`.

    The delay grows with utilisation, so bisection finds it.
    """
    if budget_ms < 0:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(BISECTION_STEPS):
        mid = (low + high) / 2
        if wait_percentile_ms(mid, mean_service_ms, second_moment_ms2, percentile) <= budget_ms:
            low = mid
        else:
            high = mid
    return low
