"""`random`: a decoder drawn uniformly (from the pool's generator; seeded by the turn without one)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from tandem.router.decision import pickers
from tandem.router.decision.balance.base import Balance, Rng
from tandem.router.decision.snapshot import EndpointSnapshot, RequestFacts


class RandomChoice(Balance):
    def pick(
        self, candidates: Sequence[EndpointSnapshot], facts: RequestFacts, turn: int, rng: Rng
    ) -> EndpointSnapshot:
        return pickers.uniform(candidates, rng or random.Random(turn))
