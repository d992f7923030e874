"""Queueing approximations for sizing: M/G/c waiting time at a percentile, alone or with a latency.

Requests arrive as a Poisson stream; one replica serves them one after another with service times
S. Pollaczek-Khinchine gives the mean wait E[W] = lambda E[S^2] / (2 (1 - rho)); its tail is taken
as exponential with the M/M/1 shape, P(W > t) = rho exp(-rho t / E[W]), so the p-th percentile is
E[W] / rho * ln(rho / (1 - p)) (zero while rho <= 1 - p).

c replicas behind the router are one queue, not c: the router sends each request to the replica
with the least load when it arrives, so no replica waits while another idles. Their wait is
M/G/c's, by the usual two-moment approximation (Lee and Longton): the M/M/c wait scaled by
E[S^2] / (2 E[S]^2), E[W] = C E[S^2] / (2 E[S] c (1 - rho)), where C is Erlang's C, the chance an
arrival waits at all (rho at c = 1, which gives Pollaczek-Khinchine back); and the M/M/c tail
P(W > t) = C exp(-C t / E[W]). The sizing still sizes each replica as if it queued alone (an upper
bound on the pooled wait); what the plan predicts is the pooled wait (benchmarks/twin/README.md
shows the independent queues 30 % pessimistic on a disaggregated pool's TTFT).

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


def erlang_c(servers: int, rho: float) -> float:
    """The chance an arrival waits, `servers` servers each busy a share `rho` of the time (M/M/c).

    Erlang's B by its recursion B(k) = a B(k-1) / (k + a B(k-1)), a = c rho the offered load, which
    stays in [0, 1] for any c; then C = B / (1 - rho (1 - B))."""
    if rho <= 0:
        return 0.0
    if rho >= 1:
        return 1.0
    offered, blocked = servers * rho, 1.0
    for k in range(1, servers + 1):
        blocked = offered * blocked / (k + offered * blocked)
    return blocked / (1 - rho * (1 - blocked))


def mean_wait_ms(rho: float, mean_service_ms: float, second_moment_ms2: float, servers: int = 1) -> float:
    """E[W] = C E[S^2] / (2 E[S] c (1 - rho)) (Pollaczek-Khinchine at c = 1), infinite at rho >= 1."""
    if rho <= 0:
        return 0.0
    if rho >= 1:
        return math.inf
    waits = erlang_c(servers, rho)
    return waits * second_moment_ms2 / (2 * mean_service_ms * servers * (1 - rho))


def wait_percentile_ms(
    rho: float, mean_service_ms: float, second_moment_ms2: float, percentile: float, servers: int = 1
) -> float:
    """The percentile of the queueing delay at utilisation `rho` of each of `servers` servers fed by
    one queue (infinite at rho >= 1)."""
    if rho <= 0:
        return 0.0
    if rho >= 1:
        return math.inf
    tail = 1 - percentile / 100
    waits = erlang_c(servers, rho)
    if waits <= tail:
        return 0.0
    return mean_wait_ms(rho, mean_service_ms, second_moment_ms2, servers) / waits * math.log(waits / tail)


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
