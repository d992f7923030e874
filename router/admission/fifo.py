"""`fifo`: arrival order."""

from __future__ import annotations

from tandem.router.admission.base import Admission, Ticket


class Fifo(Admission):
    def key(self, ticket: Ticket) -> float:
        return 0.0  # equal keys wait in arrival order
