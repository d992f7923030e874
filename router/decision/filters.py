"""Filters: which endpoints may take the request. Each returns the eligible subset, in order."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

from tandem.router.decision.snapshot import EndpointSnapshot

Filter = Callable[[Sequence[EndpointSnapshot]], tuple[EndpointSnapshot, ...]]


def healthy(endpoints: Sequence[EndpointSnapshot]) -> tuple[EndpointSnapshot, ...]:
    return tuple(e for e in endpoints if e.healthy)


def excluding(urls: Collection[str]) -> Filter:
    """Drop endpoints that already failed this request."""

    def keep(endpoints: Sequence[EndpointSnapshot]) -> tuple[EndpointSnapshot, ...]:
        return tuple(e for e in endpoints if e.url not in urls)

    return keep


def below_load(limit: float) -> Filter:
    """Drop endpoints whose load per engine reached the limit (a saturated prefiller)."""

    def keep(endpoints: Sequence[EndpointSnapshot]) -> tuple[EndpointSnapshot, ...]:
        return tuple(e for e in endpoints if e.load_per_engine < limit)

    return keep


def with_buffer(chunks: int) -> Filter:
    """Keep decoders whose LMCache PD buffer has room for `chunks` (untracked buffers always do)."""

    def keep(endpoints: Sequence[EndpointSnapshot]) -> tuple[EndpointSnapshot, ...]:
        return tuple(e for e in endpoints if e.buffer_free_chunks is None or e.buffer_free_chunks >= chunks)

    return keep


def apply(filters: Sequence[Filter], endpoints: Sequence[EndpointSnapshot]) -> tuple[EndpointSnapshot, ...]:
    result = tuple(endpoints)
    for keep in filters:
        result = keep(result)
    return result
