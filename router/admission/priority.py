"""`priority`: the lower `x-tandem-priority` first (like vLLM's `priority`); ties in arrival order."""

from __future__ import annotations

from tandem.router.admission.base import Admission, Ticket


class Priority(Admission):
    def key(self, ticket: Ticket) -> float:
        return float(ticket.priority)
