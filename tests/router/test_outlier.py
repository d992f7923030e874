"""Outlier detection's state machine (router/outlier.py), event by event, on a clock of its own."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tandem.router import outlier
from tandem.router.errors import Failure
from tandem.router.outlier import CLEAN, EjectionPolicy, Outlier, Phase

POLICY = EjectionPolicy(consecutive_failures=3, base_s=10.0, max_s=60.0)


@dataclass(frozen=True)
class Event:
    at: float  # the clock's time
    kind: str  # fail, fail-held-back (may_eject says no), ok, probe-ok, probe-fail, take, release
    failure: Failure = Failure.ERROR


def fail(at: float, failure: Failure = Failure.ERROR) -> Event:
    return Event(at, "fail", failure)


def run(events: list[Event]) -> Outlier:
    record = CLEAN
    for e in events:
        match e.kind:
            case "fail" | "fail-held-back":
                record = outlier.failed(record, e.failure, POLICY, e.at, may=e.kind == "fail")
            case "ok":
                record = outlier.succeeded(record)
            case "probe-ok" | "probe-fail":
                record = outlier.probed(record, e.kind == "probe-ok", POLICY, e.at)
            case "take":
                record = outlier.take_trial(record)
            case "release":
                record = outlier.release_trial(record)
    return record


EJECTED_AT_2 = Outlier(Phase.EJECTED, failures=3, ejections=1, until=12.0)

CASES = {
    "failures below the threshold stay in rotation": (
        [fail(0), fail(1)],
        Outlier(Phase.IN, failures=2),
    ),
    "the threshold's failure in a row ejects for the base time": (
        [fail(0), fail(1), fail(2)],
        EJECTED_AT_2,
    ),
    "timeouts count like errors": (
        [fail(0, Failure.TIMEOUT), fail(1, Failure.NO_NOTIFICATION), fail(2, Failure.TIMEOUT)],
        EJECTED_AT_2,
    ),
    "a success resets the count": (
        [fail(0), fail(1), Event(1.5, "ok"), fail(2)],
        Outlier(Phase.IN, failures=1),
    ),
    "an endpoint that cannot be reached is out at once": (
        [fail(5, Failure.CONNECT)],
        Outlier(Phase.EJECTED, failures=1, ejections=1, until=15.0),
    ),
    "one that broke its answer too": (
        [fail(5, Failure.BROKE)],
        Outlier(Phase.EJECTED, failures=1, ejections=1, until=15.0),
    ),
    "while half the role is out, counted failures do not eject": (
        [fail(0), fail(1), Event(2, "fail-held-back"), Event(3, "fail-held-back")],
        Outlier(Phase.IN, failures=4),
    ),
    "nor do they hold back a decisive one": (
        [Event(2, "fail-held-back", Failure.CONNECT)],
        Outlier(Phase.EJECTED, failures=1, ejections=1, until=12.0),
    ),
    "failures of requests sent before the ejection do not extend it": (
        [fail(0), fail(1), fail(2), fail(5), fail(9)],
        Outlier(Phase.EJECTED, failures=5, ejections=1, until=12.0),
    ),
    "nor does their success end it": (
        [fail(0), fail(1), fail(2), Event(5, "ok")],
        EJECTED_AT_2,
    ),
    "no probe before the time is up": (
        [fail(0), fail(1), fail(2), Event(11.9, "probe-ok")],
        EJECTED_AT_2,
    ),
    "a healthy probe puts it on trial": (
        [fail(0), fail(1), fail(2), Event(12, "probe-ok")],
        Outlier(Phase.TRIAL, failures=3, ejections=1, until=12.0),
    ),
    "a failed probe ejects it again for twice as long": (
        [fail(0), fail(1), fail(2), Event(12, "probe-fail")],
        Outlier(Phase.EJECTED, failures=3, ejections=2, until=32.0),
    ),
    "a failed trial ejects it again for twice as long, after one failure": (
        [fail(0), fail(1), fail(2), Event(12, "probe-ok"), Event(12, "take"), fail(13)],
        Outlier(Phase.EJECTED, failures=4, ejections=2, until=33.0),
    ),
    "ejections in a row double up to the longest": (
        [fail(0, Failure.CONNECT)] + [Event(t, "probe-fail") for t in (10, 30, 70, 130, 190)],
        Outlier(Phase.EJECTED, failures=1, ejections=6, until=250.0),
    ),
    "a trial that succeeds is back in rotation with its counts reset": (
        [fail(0), fail(1), fail(2), Event(12, "probe-ok"), Event(12, "take"), Event(13, "ok")],
        CLEAN,
    ),
    "a trial whose request left without an outcome is free for the next one": (
        [fail(0), fail(1), fail(2), Event(12, "probe-ok"), Event(12, "take"), Event(13, "release")],
        Outlier(Phase.TRIAL, failures=3, ejections=1, until=12.0),
    ),
}


@pytest.mark.parametrize(("events", "expected"), CASES.values(), ids=CASES.keys())
def test_outlier_record_after_events(events: list[Event], expected: Outlier) -> None:
    assert run(events) == expected


@pytest.mark.parametrize(
    ("record", "in_rotation"),
    [
        (CLEAN, True),
        (Outlier(Phase.IN, failures=2), True),
        (EJECTED_AT_2, False),
        (Outlier(Phase.TRIAL, ejections=1), True),
        (Outlier(Phase.TRIAL, ejections=1, trial_held=True), False),
    ],
)
def test_in_rotation(record: Outlier, in_rotation: bool) -> None:
    assert record.in_rotation is in_rotation


def test_due_only_once_ejected_and_its_time_is_up() -> None:
    assert not outlier.due(CLEAN, 1e9)
    assert not outlier.due(EJECTED_AT_2, 11.99)
    assert outlier.due(EJECTED_AT_2, 12.0)
    assert not outlier.due(Outlier(Phase.TRIAL, until=12.0), 13.0)


def test_a_success_in_rotation_leaves_the_shared_clean_record() -> None:
    """The data path tests `record is CLEAN` to skip work on every successful request."""
    assert outlier.succeeded(Outlier(Phase.IN, failures=2)) is CLEAN
    assert outlier.succeeded(CLEAN) is CLEAN


@pytest.mark.parametrize(
    ("others_out", "total", "allowed"),
    [
        (0, 1, True),  # the only endpoint may go: at least one always may
        (0, 2, True),
        (1, 2, False),  # never more than half
        (1, 3, False),
        (1, 4, True),
        (2, 4, False),
        (2, 6, True),
        (3, 6, False),
    ],
)
def test_may_eject_keeps_at_least_half_in_rotation(others_out: int, total: int, allowed: bool) -> None:
    assert outlier.may_eject(others_out, total) is allowed


@pytest.mark.parametrize(("n", "seconds"), [(1, 10.0), (2, 20.0), (3, 40.0), (4, 60.0), (9, 60.0)])
def test_ejection_lengths(n: int, seconds: float) -> None:
    assert POLICY.ejection_s(n) == seconds
