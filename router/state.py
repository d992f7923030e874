"""The router's live view of its pools: settings, admission queues, endpoints and peer replicas.

One `RouterState` per app, created in the lifespan; discovery writes it (it is a DiscoverySink),
the data path reads it.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from tandem.api.spec import AdmissionPolicy
from tandem.router.admission import ADMISSION, Admission, AdmissionContext, AdmissionQueue
from tandem.router.decision import Role
from tandem.router.endpoints import EndpointAddress, EndpointRegistry
from tandem.router.errors import BadRequestError, ModelNotFoundError
from tandem.router.metrics import RouterMetrics
from tandem.router.pd_buffer import BufferShare, Clock, share_of, starved
from tandem.router.pool import PoolConfig
from tandem.router.signals import PoolSignals

log = logging.getLogger(__name__)


@dataclass
class PoolRuntime:
    config: PoolConfig
    admission: AdmissionQueue
    policy: AdmissionPolicy  # the admission policy's name and TTFT target that built the queue's policy
    ttft_ms: float
    signals: PoolSignals  # the workload series of the pool and its served model
    turns: itertools.count[int] = field(default_factory=itertools.count)  # round-robin and tie-breaks
    rng: random.Random = field(default_factory=random.Random)
    synced: bool = False
    max_model_len: int | None = None  # the engines' context length: the spec's, or as /tokenize said


class RouterState:
    def __init__(
        self,
        registry: EndpointRegistry,
        metrics: RouterMetrics,
        *,
        max_inflight_per_decode: int,
        retry_after_s: int,
        handoff_timeout_s: float,
        clock: Clock = time.monotonic,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self._patience_s = handoff_timeout_s  # a decoder short for longer is starved
        self._clock = clock
        self._per_decode = max_inflight_per_decode
        self._retry_after_s = retry_after_s
        self.pools: dict[str, PoolRuntime] = {}
        self._peers: dict[str, frozenset[str]] = {}

    # DiscoverySink

    def set_pool(self, config: PoolConfig) -> None:
        runtime = self.pools.get(config.name)
        signals = self.metrics.workload.declare(config.name, config.model)
        if runtime is None:
            runtime = self.pools[config.name] = PoolRuntime(
                config, self._admission(config), config.admission, config.slo.ttft_ms, signals
            )
        runtime.signals = signals
        runtime.config = config
        if config.max_model_len is not None:
            runtime.max_model_len = config.max_model_len
        # Requests already waiting keep their places; new ones queue by the new rules.
        if (config.admission, config.slo.ttft_ms) != (runtime.policy, runtime.ttft_ms):
            runtime.admission.policy = self._policy(config)
            runtime.policy, runtime.ttft_ms = config.admission, config.slo.ttft_ms
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

    def drop_pool(self, pool: str) -> None:
        """A deleted pool is forgotten (its model leaves /v1/models; new requests for it get 404)
        by a router that serves others, a shared router. A router's last pool stays: that router
        is deleted with it, and serves on until then."""
        if pool not in self.pools or len(self.pools) == 1:
            return
        del self.pools[pool]
        self.registry.drop_pool(pool)
        self._peers.pop(pool, None)
        log.info("pool %s: deleted, no longer served", pool)

    # Reads

    def _admission(self, config: PoolConfig) -> AdmissionQueue:
        name = config.name

        def capacity() -> int:
            """The admitted requests per decode engine, over the engines in rotation: a DP endpoint
            is its ranks' engines (vLLM's internal DP load balancing spreads them)."""
            runtime = self.pools.get(name)  # gone once the pool is dropped: its last requests end
            engines = runtime.config.decode_dp if runtime is not None else 1
            return self._per_decode * engines * max(1, self.registry.available(name, Role.DECODE))

        return AdmissionQueue(
            name,
            self._policy(config),
            config.max_queue,
            capacity,
            retry_after_s=self._retry_after_s,
            clock=self._clock,
        )

    def _policy(self, config: PoolConfig) -> Admission:
        context = AdmissionContext(
            config.name, config.slo.ttft_ms / 1000, self.metrics.admission_mode, self._clock
        )
        policy = ADMISSION[config.admission].build(context)
        if policy.mode is None:
            self.metrics.admission_mode(config.name, None)  # an adaptive policy it replaces left none
        return policy

    def buffer_share(self, pool: str) -> BufferShare | None:
        """What this replica may fill of each decoder's PD buffer (None: not tracked)."""
        config = self.pools[pool].config
        if config.decoder_buffer_chunks is None:
            return None
        smallest = config.routing.pd_chunks(config.routing.threshold)
        return share_of(config.decoder_buffer_chunks, len(self._peers.get(pool, ())), smallest)

    def buffer_report(self) -> Iterator[tuple[str, str, int, bool]]:
        """(pool, decoder URL, free chunks of this replica's share, starved) for the metrics."""
        now = self._clock()
        for name in self.pools:
            share = self.buffer_share(name)
            if share is None:
                continue
            for state in self.registry.states(name, Role.DECODE):
                yield name, state.url, share.free(state), starved(state, self._patience_s, now)

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
        """Why the router cannot serve yet (empty when it can): every pool's discovery synced, and
        a decode endpoint in one of them at least. A router that serves several pools (a shared
        router) stays ready while one pool has no decoder, so as not to stop the other models; that
        pool's requests are refused (503, no eligible endpoint) meanwhile."""
        if not self.pools:
            return ["no pool discovered yet"]
        unsynced = [f"pool {name}: discovery not synced" for name, rt in self.pools.items() if not rt.synced]
        empty = [
            f"pool {name}: no decode endpoint available"
            for name, runtime in self.pools.items()
            if runtime.synced and not self.registry.available(name, Role.DECODE)
        ]
        serving = len(empty) < len(self.pools) - len(unsynced)
        return unsynced if serving else [*unsynced, *empty]
