"""What a workload's token lengths mean: ``TokenStats`` (mean, optional p90) is a log-normal.

The planner sizes a pool for that distribution and the load generator draws requests from it, so
both read the fit from here.
"""

from __future__ import annotations

import math
from statistics import NormalDist

Z90 = NormalDist().inv_cdf(0.9)
# A log-normal's p90 / mean is e^(z90 sigma - sigma^2 / 2), largest at sigma = z90: e^(z90^2 / 2).
MAX_P90_RATIO = math.exp(Z90 * Z90 / 2)


def most_p90(mean: float) -> int:
    """The largest whole p90 a log-normal of this mean has."""
    return math.floor(mean * MAX_P90_RATIO)


def p90_problem(mean: float, p90: float) -> str | None:
    """Why no log-normal has this mean and p90 (None: one has)."""
    if p90 < mean:
        return f"p90 ({p90:g}) must not be below mean ({mean:g})"
    if p90 > most_p90(mean):
        return (
            f"p90 ({p90:g}) is {p90 / mean:.2f} times mean ({mean:g}), but a log-normal's p90 is at "
            f"most {MAX_P90_RATIO:.2f} times its mean, so no distribution the planner sizes for has "
            f"them: give a p90 of at most {most_p90(mean)}, or a larger mean"
        )
    return None


def lognormal_sigma(mean: float, p90: float | None) -> float:
    """Sigma of the log-normal with this mean and p90 (0 when no spread is given).

    Solves ln(p90 / mean) = z90 * sigma - sigma^2 / 2 for its smaller root; a p90 beyond
    ``most_p90`` has none (``p90_problem`` says so).
    """
    if p90 is None or p90 <= mean:
        return 0.0
    problem = p90_problem(mean, p90)
    if problem is not None:
        raise ValueError(problem)
    # Not below 0: at most_p90 the root is z90 itself, give or take rounding.
    return Z90 - math.sqrt(max(0.0, Z90 * Z90 - 2 * math.log(p90 / mean)))


def lognormal_mu(mean: float, sigma: float) -> float:
    """Mu of the log-normal with this mean and sigma: mean = e^(mu + sigma^2 / 2)."""
    return math.log(mean) - sigma * sigma / 2
