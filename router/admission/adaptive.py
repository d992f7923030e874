"""`adaptive`: FIFO, earliest deadline first or least GPU time first, by how the queue is doing.

It measures, over the requests it lets go, the queueing delay against the pool's TTFT target and
the share that waited past their deadline (their first token can no longer be in time), both
smoothed over about `1/SMOOTHING` admissions (its own window: no other component's counters).
Light load: FIFO, the fairest. A delay near the target: earliest deadline first, which saves the
requests that can still make it. Attainment collapsing (many late): least GPU time first
(`cost_optimized`), which serves the most requests, and so the most goodput, per GPU second. The
thresholds to leave a mode lie below those to enter it (hysteresis), so it does not flap. Each
change is a log line and the `tandem_router_admission_mode` gauge; the waiters are then ordered
again by the new mode's keys (O(n), at a change only).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from tandem.router.admission.base import Admission, AdmissionContext, Need, Ticket
from tandem.router.admission.cost_optimized import CostOptimized
from tandem.router.admission.fifo import Fifo
from tandem.router.admission.slo import EarliestDeadline

log = logging.getLogger(__name__)

SMOOTHING = 0.1  # the weight of the latest admission in the moving averages


class Mode(StrEnum):
    FIFO = "fifo"
    SLO = "slo"
    COST = "cost-optimized"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Enter/leave levels: the smoothed queueing delay as a fraction of the TTFT target, and the
    smoothed share of admissions past their deadline."""

    slo_enter_delay: float = 0.5
    slo_leave_delay: float = 0.25
    cost_enter_late: float = 0.5
    cost_leave_late: float = 0.2


THRESHOLDS = Thresholds()


def next_mode(mode: Mode, delay: float, late: float, t: Thresholds = THRESHOLDS) -> Mode:
    """The mode after a measurement: `delay` the queueing delay over the TTFT target, `late` the
    share of admissions past their deadline (both smoothed)."""
    if mode is Mode.COST:
        if late >= t.cost_leave_late:
            return Mode.COST
        return Mode.SLO if delay >= t.slo_leave_delay else Mode.FIFO
    if late >= t.cost_enter_late:
        return Mode.COST
    if mode is Mode.SLO:
        return Mode.FIFO if delay < t.slo_leave_delay else Mode.SLO
    return Mode.SLO if delay >= t.slo_enter_delay else Mode.FIFO


ORDERS: dict[Mode, Admission] = {Mode.FIFO: Fifo(), Mode.SLO: EarliestDeadline(), Mode.COST: CostOptimized()}


class Adaptive(Admission):
    needs = frozenset({Need.GPU_TIME})
    observes = True

    def __init__(self, context: AdmissionContext) -> None:
        self._context = context
        self._mode = Mode.FIFO
        self._order = ORDERS[Mode.FIFO]
        self.delay = 0.0  # smoothed queueing delay / TTFT target
        self.late = 0.0  # smoothed share of admissions past their deadline
        context.on_mode(context.pool, self._mode.value)

    @classmethod
    def build(cls, context: AdmissionContext) -> Adaptive:
        return cls(context)

    @property
    def mode(self) -> str:
        return self._mode.value

    def key(self, ticket: Ticket) -> float:
        return self._order.key(ticket)

    def admitted(self, ticket: Ticket, now: float) -> bool:
        waited = (now - ticket.arrival) / self._context.ttft_s
        self.delay += SMOOTHING * (waited - self.delay)
        self.late += SMOOTHING * ((1.0 if now > ticket.deadline else 0.0) - self.late)
        mode = next_mode(self._mode, self.delay, self.late)
        if mode is self._mode:
            return False
        log.info(
            "pool %s: admission mode %s -> %s (queueing delay %.0f%% of the TTFT target, %.0f%% late)",
            self._context.pool,
            self._mode.value,
            mode.value,
            100 * self.delay,
            100 * self.late,
        )
        self._mode, self._order = mode, ORDERS[mode]
        self._context.on_mode(self._context.pool, mode.value)
        return True
