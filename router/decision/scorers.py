"""Scorers: how good an endpoint is for the request, in [0, 1] (higher is better)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from tandem.router.decision.snapshot import EndpointSnapshot

Scorer = Callable[[EndpointSnapshot], float]

# The KV cache fill breaks ties between equally loaded endpoints without outweighing one request.
KV_USAGE_WEIGHT = 0.5


def least_load(endpoint: EndpointSnapshot) -> float:
    """Fewest open requests per engine (a DP endpoint spreads its requests over its ranks). Each
    failure in a row counts as one more: an endpoint that fails fast holds no requests open, and
    would otherwise look the least loaded of all."""
    load = endpoint.load_per_engine + endpoint.failures
    return 1.0 / (1.0 + load + KV_USAGE_WEIGHT * min(max(endpoint.kv_usage_per_engine, 0.0), 1.0))


def affinity(key: str) -> Scorer:
    """Rendezvous (highest-random-weight) hashing: each key prefers one endpoint, and only keys of
    an endpoint that leaves or arrives move, so sessions and prompt prefixes keep their KV cache."""

    def score(endpoint: EndpointSnapshot) -> float:
        digest = hashlib.blake2b(f"{key}\0{endpoint.url}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2.0**64

    return score
