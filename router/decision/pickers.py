"""Pickers: choose one endpoint from the eligible, non-empty candidates."""

from __future__ import annotations

import random
from collections.abc import Sequence

from tandem.router.decision.scorers import Scorer
from tandem.router.decision.snapshot import EndpointSnapshot


def highest(candidates: Sequence[EndpointSnapshot], scorer: Scorer, turn: int = 0) -> EndpointSnapshot:
    """The best-scored candidate; ties rotate with `turn` so that idle endpoints share the work."""
    if len(candidates) == 1:
        return candidates[0]
    scores = [scorer(e) for e in candidates]
    best = max(scores)
    tied = [e for e, s in zip(candidates, scores, strict=True) if s == best]
    if len(tied) == 1:
        return tied[0]
    return sorted(tied, key=_url)[turn % len(tied)]


def round_robin(candidates: Sequence[EndpointSnapshot], turn: int) -> EndpointSnapshot:
    return sorted(candidates, key=_url)[turn % len(candidates)]


def uniform(candidates: Sequence[EndpointSnapshot], rng: random.Random) -> EndpointSnapshot:
    return rng.choice(sorted(candidates, key=_url))


def _url(endpoint: EndpointSnapshot) -> str:
    return endpoint.url
