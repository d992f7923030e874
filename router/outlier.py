"""Outlier detection: when an endpoint leaves rotation on its own failures, and how it comes back.

Pure: an endpoint's record is a frozen `Outlier`, each event a function of (record, policy, now);
the monitor (monitor.py) applies them and does the I/O (health probes), so tests bring their own
clock. The states, after Envoy's outlier detection and a circuit breaker's half-open state:

    IN ──failure──► IN, one more in a row ──(policy.consecutive_failures in a row)──► EJECTED
    IN ──a decisive failure (cannot connect, broke mid-answer)───────────────────────► EJECTED
    EJECTED ──its time is up, /health answers 200──► TRIAL (one request at a time)
    EJECTED ──its time is up, /health fails────────► EJECTED, for twice as long
    TRIAL ──the request succeeds──► IN, counts reset;   TRIAL ──it fails──► EJECTED, twice as long
    IN ──success──► IN, counts reset

The n-th ejection in a row lasts `policy.ejection_s(n)`: the base doubled n-1 times, capped. A
health probe alone cannot bring back an engine that hangs or answers 500 with its /health at 200;
the trial request does, and while it is out nobody else is sent there.

Counted (not decisive) failures eject an endpoint only while at most half of its role is out of
rotation, or none is (`may_eject`): a client whose requests make every engine fail, or an
overload that times every engine out, cannot empty a pool that way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from tandem.router.errors import Failure

# Failures that leave no doubt: the endpoint is gone or broke its connection. Out at once.
DECISIVE = frozenset({Failure.CONNECT, Failure.BROKE})


class Phase(StrEnum):
    IN = "in"  # in rotation
    EJECTED = "ejected"  # out until `until`, then probed
    TRIAL = "trial"  # probed healthy; in rotation for one request at a time


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    consecutive_failures: int = 5  # counted failures in a row that eject (Envoy's consecutive_5xx)
    base_s: float = 1.0  # the first ejection's length
    max_s: float = 300.0  # the longest ejection (Envoy's max_ejection_time)

    def ejection_s(self, ejections: int) -> float:
        """How long the n-th ejection in a row lasts."""
        return min(self.base_s * 2.0 ** max(ejections - 1, 0), self.max_s)


@dataclass(frozen=True, slots=True)
class Outlier:
    phase: Phase = Phase.IN
    failures: int = 0  # in a row, since the last success
    ejections: int = 0  # in a row, since the last success
    until: float = 0.0  # EJECTED: not probed before this time (the clock's)
    trial_held: bool = False  # TRIAL: a request is trying the endpoint

    @property
    def in_rotation(self) -> bool:
        return self.phase is Phase.IN or (self.phase is Phase.TRIAL and not self.trial_held)


CLEAN = Outlier()  # what a success leaves: compared by identity on the data path


def may_eject(others_out: int, total: int) -> bool:
    """Whether one more endpoint of a role of `total` may go out when `others_out` already are."""
    return others_out == 0 or 2 * (others_out + 1) <= total


def failed(record: Outlier, failure: Failure, policy: EjectionPolicy, now: float, *, may: bool) -> Outlier:
    """A request failed on the endpoint; `may`: `may_eject` for its role right now."""
    failures = record.failures + 1
    if record.phase is Phase.EJECTED:  # a request sent before the ejection: the ejection stands
        return replace(record, failures=failures)
    enough = may and failures >= policy.consecutive_failures
    if record.phase is Phase.TRIAL or failure in DECISIVE or enough:
        return _eject(record, failures, policy, now)
    return replace(record, failures=failures)


def succeeded(record: Outlier) -> Outlier:
    """A request completed on the endpoint. One that began before an ejection does not end it."""
    return record if record.phase is Phase.EJECTED else CLEAN


def due(record: Outlier, now: float) -> bool:
    """Whether the endpoint is out and its time is up: probe it."""
    return record.phase is Phase.EJECTED and now >= record.until


def probed(record: Outlier, healthy: bool, policy: EjectionPolicy, now: float) -> Outlier:
    """A due endpoint's /health answered (`healthy`: 200) or did not."""
    if not due(record, now):
        return record
    if healthy:
        return replace(record, phase=Phase.TRIAL, trial_held=False)
    return _eject(record, record.failures, policy, now)


def take_trial(record: Outlier) -> Outlier:
    """A request goes to an endpoint on trial: the others wait for its outcome."""
    return replace(record, trial_held=True) if record.phase is Phase.TRIAL else record


def release_trial(record: Outlier) -> Outlier:
    """The trial request ended without an outcome (the client left): another may try."""
    return replace(record, trial_held=False) if record.phase is Phase.TRIAL else record


def _eject(record: Outlier, failures: int, policy: EjectionPolicy, now: float) -> Outlier:
    ejections = record.ejections + 1
    return Outlier(Phase.EJECTED, failures, ejections, now + policy.ejection_s(ejections))
