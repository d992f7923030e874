"""`round-robin`: the decoders in turn, by URL."""

from __future__ import annotations

from collections.abc import Sequence

from tandem.router.decision import pickers
from tandem.router.decision.balance.base import Balance, Rng
from tandem.router.decision.snapshot import EndpointSnapshot, RequestFacts


class RoundRobin(Balance):
    def pick(
        self, candidates: Sequence[EndpointSnapshot], facts: RequestFacts, turn: int, rng: Rng
    ) -> EndpointSnapshot:
        return pickers.round_robin(candidates, turn)
