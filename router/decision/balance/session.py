"""`session`: a session keeps its decoder (rendezvous hashing of the session key), so its turns
find their KV cache; a request without a key goes to the least loaded."""

from __future__ import annotations

from collections.abc import Sequence

from tandem.router.decision import pickers, scorers
from tandem.router.decision.balance.base import Balance, Fact, Rng, least_loaded
from tandem.router.decision.snapshot import EndpointSnapshot, RequestFacts


class Session(Balance):
    needs = frozenset({Fact.SESSION_KEY})

    def pick(
        self, candidates: Sequence[EndpointSnapshot], facts: RequestFacts, turn: int, rng: Rng
    ) -> EndpointSnapshot:
        if facts.session_key is None:
            return least_loaded(candidates, turn)
        return pickers.highest(candidates, scorers.affinity(facts.session_key))
