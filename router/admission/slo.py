"""`slo`: earliest deadline first (arrival plus the pool's TTFT target, or the request's own target
from `x-tandem-ttft-ms`)."""

from __future__ import annotations

from tandem.router.admission.base import Admission, Ticket


class EarliestDeadline(Admission):
    def key(self, ticket: Ticket) -> float:
        return ticket.deadline
