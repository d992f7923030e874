"""The router's live view of its pools: settings, admission queues, endpoints and peer replicas.

One `RouterState` per app, created in the lifespan; discovery writes it (it is a DiscoverySink),
the data path reads it.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from tandem.router.admission import AdmissionQueue
from tandem.router.decision import Role
from tandem.router.endpoints import EndpointAddress, EndpointRegistry
from tandem.router.errors import BadRequestError, ModelNotFoundError
from tandem.router.metrics import RouterMetrics
from tandem.router.pool import PoolConfig

log = logging.getLogger(__name__)


@dataclass
class PoolRuntime:
    config: PoolConfig
    admission: AdmissionQueue
    turns: itertools.count[int] = field(default_factory=itertools.count)  # round-robin and tie-breaks
    rng: random.Random = field(default_factory=random.Random)
    synced: bool = False


class RouterState:
    def __init__(
        self,
        registry: EndpointRegistry,
        metrics: RouterMetrics,
        *,
        max_inflight_per_decode: int,
        retry_after_s: int,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self._per_decode = max_inflight_per_decode
        self._retry_after_s = retry_after_s
        self.pools: dict[str, PoolRuntime] = {}
        self._peers: dict[str, frozenset[str]] = {}

    # DiscoverySink

    def set_pool(self, config: PoolConfig) -> None:
        runtime = self.pools.get(config.name)
        if runtime is None:
            self.pools[config.name] = PoolRuntime(config, self._admission(config))
            return
        runtime.config = config
        # Requests already waiting keep their places; new ones queue by the new rules.
        runtime.admission.policy = config.admission
        runtime.admission.max_queue = config.max_queue

    def set_endpoints(self, pool: str, role: Role, addresses: Iterable[EndpointAddress]) -> None:
        addresses = list(addresses)
        self.registry.replace(pool, role, addresses)
        log.info("pool %s: %d %s endpoint(s)", pool, len(addresses), role)
        if pool in self.pools:
            self.pools[pool].admission.wake()  # more decoders, more room

    def set_peers(self, pool: str, peers: Iterable[str]) -> None:
        self._peers[pool] = frozenset(peers)

    def mark_synced(self, pool: str) -> None:
        if pool in self.pools:
            self.pools[pool].synced = True

    # Reads

    def _admission(self, config: PoolConfig) -> AdmissionQueue:
        name = config.name

        def capacity() -> int:
            return self._per_decode * max(1, self.registry.available(name, Role.DECODE))

        return AdmissionQueue(
            name,
            config.admission,
            config.max_queue,
            capacity,
            retry_after_s=self._retry_after_s,
        )

    def queue_depths(self) -> dict[str, int]:
        return {name: runtime.admission.depth for name, runtime in self.pools.items()}

    def is_peer(self, owner: str) -> bool:
        return any(owner in peers for peers in self._peers.values())

    def pool_for(self, model: str | None) -> PoolRuntime:
        if model is None:
            if len(self.pools) == 1:
                return next(iter(self.pools.values()))
            raise BadRequestError(
                "`model` is required: this router serves several models", code="missing_model"
            )
        for runtime in self.pools.values():
            if runtime.config.model == model:
                return runtime
        raise ModelNotFoundError(model)

    def not_ready(self) -> list[str]:
        """Why the router cannot serve yet (empty when it can)."""
        if not self.pools:
            return ["no pool discovered yet"]
        reasons = []
        for name, runtime in self.pools.items():
            if not runtime.synced:
                reasons.append(f"pool {name}: discovery not synced")
            elif not self.registry.available(name, Role.DECODE):
                reasons.append(f"pool {name}: no decode endpoint available")
        return reasons
