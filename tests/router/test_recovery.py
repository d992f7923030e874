"""`next_step`: after a failed attempt, go direct, retry elsewhere, or fail (a table)."""

from __future__ import annotations

import pytest

from tandem.api.spec import DisaggregationMode
from tandem.router.decision import EndpointSnapshot, Role, Route, RoutePlan
from tandem.router.decision.recovery import FAIL, GoDirect, RetryElsewhere, Step, next_step
from tandem.router.errors import (
    BackendError,
    BackendUnreachableError,
    Failure,
    HandoffTimeoutError,
    Ineligibility,
    PrefillFailedError,
)

DECODE = EndpointSnapshot("http://d:1", "d", Role.DECODE)
PREFILL = EndpointSnapshot("http://p:1", "p", Role.PREFILL)
PD = RoutePlan(Route.PD, DECODE, PREFILL)
DIRECT = RoutePlan(Route.DIRECT, DECODE)
LOCAL = GoDirect(RoutePlan(Route.DIRECT, DECODE, fallback=Ineligibility.PREFILL_FAILED))
AUTO, ALWAYS = DisaggregationMode.AUTO, DisaggregationMode.ALWAYS
PREFILL_FAILED = PrefillFailedError("http://p:1", "boom", failure=Failure.ERROR)


@pytest.mark.parametrize(
    ("error", "plan", "mode", "retries_left", "step"),
    [
        (PREFILL_FAILED, PD, AUTO, 0, LOCAL),  # going direct spends no retry
        (PREFILL_FAILED, PD, AUTO, 2, LOCAL),
        (PREFILL_FAILED, PD, ALWAYS, 2, RetryElsewhere("http://p:1")),  # a handoff or nothing
        (PREFILL_FAILED, PD, ALWAYS, 0, FAIL),
        (BackendUnreachableError("http://d:1", "refused"), DIRECT, AUTO, 1, RetryElsewhere("http://d:1")),
        (BackendUnreachableError("http://d:1", "refused"), DIRECT, AUTO, 0, FAIL),
        (HandoffTimeoutError("req", 0, 1, url="http://p:1"), PD, AUTO, 1, RetryElsewhere("http://p:1")),
        (BackendError("no endpoint's fault"), DIRECT, AUTO, 3, FAIL),  # another would not do better
    ],
)
def test_next_step(
    error: BackendError, plan: RoutePlan, mode: DisaggregationMode, retries_left: int, step: Step
) -> None:
    assert next_step(error, plan, mode, retries_left) == step
