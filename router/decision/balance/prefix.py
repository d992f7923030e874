"""`prefix`: prompts that begin alike share a decoder (rendezvous hashing of the prefix key), so
they find their prefix in its KV cache; a prompt without one goes to the least loaded."""

from __future__ import annotations

from collections.abc import Sequence

from tandem.router.decision import pickers, scorers
from tandem.router.decision.balance.base import Balance, Fact, Rng, least_loaded
from tandem.router.decision.snapshot import EndpointSnapshot, RequestFacts


class Prefix(Balance):
    needs = frozenset({Fact.PREFIX_KEY})

    def pick(
        self, candidates: Sequence[EndpointSnapshot], facts: RequestFacts, turn: int, rng: Rng
    ) -> EndpointSnapshot:
        if facts.prefix_key is None:
            return least_loaded(candidates, turn)
        return pickers.highest(candidates, scorers.affinity(facts.prefix_key))
