"""What discovery reports to."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from tandem.router.decision import Role
from tandem.router.endpoints import EndpointAddress
from tandem.router.pool import PoolConfig


class DiscoverySink(Protocol):
    def set_pool(self, config: PoolConfig) -> None:
        """The pool's settings, first or changed."""

    def set_endpoints(self, pool: str, role: Role, addresses: Iterable[EndpointAddress]) -> None:
        """The complete current set of a role's ready endpoints."""

    def set_peers(self, pool: str, peers: Iterable[str]) -> None:
        """The notify addresses (`ip:port`) of the pool's router replicas, this one included."""

    def mark_synced(self, pool: str) -> None:
        """The pool's settings and endpoints have been listed once."""

    def drop_pool(self, pool: str) -> None:
        """The pool was deleted."""
