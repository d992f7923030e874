"""What a request does after an attempt failed before its answer began: one pure function, so the
fallback to the direct route and the retry on another endpoint are decided in one place.

(A fallback *before* any attempt, a handoff with no pair to run it, is the plan's: `plan_route`.)
"""

from __future__ import annotations

from dataclasses import dataclass

from tandem.api.spec import DisaggregationMode
from tandem.router.decision.classify import Route
from tandem.router.decision.plan import RoutePlan
from tandem.router.errors import BackendError, Ineligibility, PrefillFailedError


@dataclass(frozen=True, slots=True)
class GoDirect:
    """Serve it on the plan's decoder, which prefills locally; no retry is spent."""

    plan: RoutePlan


@dataclass(frozen=True, slots=True)
class RetryElsewhere:
    """Plan again without the endpoint that failed; one retry is spent."""

    url: str


@dataclass(frozen=True, slots=True)
class Fail:
    """Nothing else would do better, or no retry is left: the error goes to the client."""


Step = GoDirect | RetryElsewhere | Fail
FAIL = Fail()


def next_step(error: BackendError, plan: RoutePlan, mode: DisaggregationMode, retries_left: int) -> Step:
    if isinstance(error, PrefillFailedError) and plan.route is Route.PD and mode != DisaggregationMode.ALWAYS:
        return GoDirect(RoutePlan(Route.DIRECT, plan.decode, fallback=Ineligibility.PREFILL_FAILED))
    if error.url is None or retries_left <= 0:  # not one endpoint's failure: another would not do better
        return FAIL
    return RetryElsewhere(error.url)
