"""`least-load`: the decoder with the fewest open requests (the KV fill breaks ties)."""

from __future__ import annotations

from collections.abc import Sequence

from tandem.router.decision.balance.base import Balance, Rng, least_loaded
from tandem.router.decision.snapshot import EndpointSnapshot, RequestFacts


class LeastLoad(Balance):
    def pick(
        self, candidates: Sequence[EndpointSnapshot], facts: RequestFacts, turn: int, rng: Rng
    ) -> EndpointSnapshot:
        return least_loaded(candidates, turn)
