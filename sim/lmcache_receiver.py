"""LMCache PD handoff, the decoder's end (``kv_consumer``, ``pd_role: receiver``), as LMCache 0.5.6's
async PD backend does it (``v1/storage_backend/pd_backend_async.py``; line numbers below are that
file's unless named).

It binds the init and alloc ports of every worker rank on ``pd_peer_host`` (ZMQ ROUTER, each
message answered in its own task, 1184-1213) and keeps received chunks in a PD buffer per rank
(:class:`~tandem.sim.pd_buffer.PDBuffer`). An ``AllocRequest`` (``_async_allocate_and_put``,
1288-1476):

- is answered ``[-1] * len(keys)`` at once only when it declares more ``total_chunks`` than the whole
  buffer holds (1318-1326), or breaks the protocol (``total_chunks`` 0, more keys than declared);
- otherwise waits to be admitted (its ``total_chunks`` reserved, 1328-1336), then for each key
  either pins a key already held (its index in ``already_sent_indexes``) or waits for a free chunk
  (1389-1405). Each wait lasts at most ``pd_allocation_timeout_sec`` (default: for ever), then the
  request rolls back and is answered -1.

Nothing is evicted. A chunk is freed when the decode leg that reads it drops its last reference
(``remove()``, 1514-1535): see :func:`~tandem.sim.pd_buffer.plan_retrieval` for which chunks a decode
leg reads. Every request looks its prompt up, less its last ``skip_last_n_tokens`` tokens: the
leading chunks held on every storing rank are the hit. A hit whose read chunks are still being
written is an early read (fast, and the answer is garbage, as reading half-written KV gives);
otherwise the request recomputes what was not hit, counted as a miss when the prompt has the shape
of a decode leg (it ends with generated text).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import zmq
import zmq.asyncio

from tandem.sim.connector import EngineRequest, FinishedHandoff, HeldBlocks, LoadedKV
from tandem.sim.faults import Faults, FaultState
from tandem.sim.lmcache_connector import CONNECTOR, FirstTokens, Layout
from tandem.sim.metrics import SimMetrics
from tandem.sim.pd_buffer import PDBuffer, plan_retrieval
from tandem.sim.pd_messages import (
    AllocRequest,
    AllocResponse,
    AllocSideMsg,
    CancelNotif,
    InitSideMsg,
    NixlInitResponse,
    SimWriteDone,
)
from tandem.sim.settings import LMCacheConfig, SimSettings, resolve_bind_host
from tandem.sim.stopping import FinishReason
from tandem.sim.zmq_rpc import Handler, serve_router, tcp_address

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class AllocationError(RuntimeError):
    """An allocation LMCache's receiver answers with -1 (it raises ``RuntimeError`` there)."""


class RankAllocator:
    """One worker rank's buffer and its allocation server (LMCache runs one per worker process)."""

    def __init__(self, capacity: int, timeout_s: float) -> None:
        self.buffer = PDBuffer(capacity)
        self.timeout_s = timeout_s
        self.waiting = 0  # allocations waiting for admission or space
        self._allocated: dict[str, list[str]] = {}  # req_id -> keys of its batches so far
        self._changed = asyncio.Event()

    def changed(self) -> None:
        """Chunks or reservations were freed: wake every waiting allocation to try again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def allocate(self, request: AllocRequest) -> AllocResponse:
        """``_async_allocate_and_put``; raises :class:`AllocationError` where LMCache answers -1."""
        buffer = self.buffer
        req_id = request.req_id
        if req_id and req_id not in self._allocated:
            total = request.total_chunks
            if total == 0:
                raise AllocationError(f"req {req_id}: the receiver needs total_chunks > 0")
            if total > buffer.capacity:
                raise AllocationError(
                    f"PD receiver buffer too small for req {req_id}: it needs {total} chunks, "
                    f"the buffer holds {buffer.capacity}"
                )
            if not await self._until(lambda: buffer.reserve(req_id, total) or None):
                raise AllocationError(f"admission of req {req_id} ({total} chunks) timed out")
        if req_id:
            prior = self._allocated.get(req_id, [])
            if len(prior) + len(request.keys) > request.total_chunks:
                self._roll_back(req_id, [])
                raise AllocationError(
                    f"req {req_id} declared {request.total_chunks} chunks, sent "
                    f"{len(prior) + len(request.keys)}"
                )
        indexes: list[int] = []
        already: list[int] = []
        batch: list[str] = []
        try:
            for position, key in enumerate(request.keys):
                if buffer.pin(key):
                    already.append(position)
                    batch.append(key)
                    continue
                index = await self._until(functools.partial(buffer.allocate, key))
                if index is None:
                    raise AllocationError(f"no free chunk for key {position} of req {req_id} in time")
                indexes.append(index)
                batch.append(key)
        except BaseException:
            self._roll_back(req_id, batch)
            raise
        if req_id:
            self._allocated.setdefault(req_id, []).extend(batch)
            if request.is_last_batch:
                del self._allocated[req_id]
                buffer.release_reservation(req_id)
                self.changed()
        return AllocResponse(remote_indexes=indexes, already_sent_indexes=already)

    def cancel(self, message: CancelNotif) -> None:
        """A sender aborted: drop a reference of each key and the request's reservation (1238-1262)."""
        for key in message.keys:
            self.buffer.remove(key)
        self.buffer.release_reservation(message.req_id)
        self._allocated.pop(message.req_id, None)
        self.changed()

    def _roll_back(self, req_id: str, batch: list[str]) -> None:
        for key in [*batch, *self._allocated.pop(req_id, [])]:
            self.buffer.remove(key)
        if req_id:
            self.buffer.release_reservation(req_id)
        self.changed()

    async def _until(self, attempt: Callable[[], _T | None]) -> _T | None:
        """Retry ``attempt`` whenever something is freed, for ``timeout_s`` at most; None on timeout."""
        result = attempt()
        if result is not None:
            return result
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        self.waiting += 1
        try:
            while result is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                changed = self._changed  # taken right after the failed attempt: no wake-up is lost
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), None if math.isinf(remaining) else remaining)
                result = attempt()
            return result
        finally:
            self.waiting -= 1


class LMCacheReceiver:
    """The decoder's end (``kv_consumer``)."""

    def __init__(
        self, settings: SimSettings, lmcache: LMCacheConfig, metrics: SimMetrics, faults: FaultState
    ) -> None:
        assert settings.kv_transfer_config is not None
        assert lmcache.pd_peer_init_port is not None and lmcache.pd_peer_alloc_port is not None
        assert lmcache.pd_buffer_size is not None
        self._layout = Layout.of(settings, lmcache)
        self._skip_last = settings.kv_transfer_config.skip_last_n_tokens
        self._host = resolve_bind_host(lmcache.pd_peer_host, None)
        self._init_ports = lmcache.pd_peer_init_port
        self._alloc_ports = lmcache.pd_peer_alloc_port
        capacity = lmcache.pd_buffer_size // self._layout.chunk_bytes
        timeout_s = lmcache.pd_allocation_timeout_sec / settings.speed
        self._ranks = [RankAllocator(capacity, timeout_s) for _ in range(self._layout.world_size)]
        self._metrics = metrics
        self._first_tokens = FirstTokens()
        self._context = zmq.asyncio.Context()
        self._sockets: list[zmq.asyncio.Socket] = []
        self._servers: list[asyncio.Task[None]] = []
        metrics.pd_buffer_chunks.set(capacity * len(self._ranks))
        faults.subscribe(self._apply_faults)

    async def start(self, held: HeldBlocks) -> None:
        for rank in range(self._layout.world_size):
            init = self._bind(self._init_ports[rank])
            alloc = self._bind(self._alloc_ports[rank])
            self._servers.append(asyncio.create_task(serve_router(init, self._handshake)))
            self._servers.append(asyncio.create_task(serve_router(alloc, self._allocation_handler(rank))))
        log.info(
            "LMCache receiver listening on %s init %s alloc %s",
            self._host,
            self._init_ports,
            self._alloc_ports,
        )

    async def stop(self) -> None:
        for task in self._servers:
            task.cancel()
        await asyncio.gather(*self._servers, return_exceptions=True)
        for socket in self._sockets:
            socket.close(linger=0)
        self._context.term()

    def validate(self, request: EngineRequest) -> None:
        return None

    async def load(self, request: EngineRequest, *, continuation: bool, cached_tokens: int) -> LoadedKV:
        layout = self._layout
        lookup = request.prompt[: max(0, len(request.prompt) - self._skip_last)]
        keys = layout.keys(lookup, request.kv_transfer_params)
        per_rank = {rank: layout.rank_keys(keys, rank) for rank in layout.storing_ranks}
        states = [
            {self._ranks[rank].buffer.state(rank_keys[i]) for rank, rank_keys in per_rank.items()}
            for i in range(len(keys.lengths))
        ]
        hit = next((i for i, found in enumerate(states) if "absent" in found), len(states))
        retrieval = plan_retrieval(keys.lengths, hit, cached_tokens, len(request.prompt), layout.chunk_size)
        early = any(states[i] != {"ready"} for i in retrieval.read)
        if retrieval.read:
            for rank, rank_keys in per_rank.items():
                for i in retrieval.read:
                    self._ranks[rank].buffer.remove(rank_keys[i])
                self._ranks[rank].changed()
            self._update_gauges()
        metrics = self._metrics
        metrics.kv_lookups.labels(connector=CONNECTOR).inc()
        if early:
            metrics.kv_early_reads.labels(connector=CONNECTOR).inc()
        elif states and hit == len(states):
            metrics.kv_hits.labels(connector=CONNECTOR).inc()
        elif continuation:
            metrics.kv_misses.labels(connector=CONNECTOR).inc()
        return LoadedKV(retrieval.loaded_tokens, corrupt=early)

    def on_prefill_done(self, request: EngineRequest, first_token: int) -> Awaitable[object] | None:
        self._first_tokens.record(request, first_token)
        return None

    def request_finished(self, request: EngineRequest, reason: FinishReason) -> FinishedHandoff:
        return self._first_tokens.finished(request)

    def buffer_state(self) -> dict[str, Any] | None:
        layout = self._layout
        storing = layout.storing_ranks
        timeout_s = self._ranks[0].timeout_s
        ranks = []
        for worker_id, rank in enumerate(self._ranks):
            buffer = rank.buffer
            counts = buffer.counts()
            ranks.append(
                {
                    "worker_id": worker_id,
                    "stores_kv": worker_id in storing,
                    "capacity": buffer.capacity,
                    "used": buffer.used,
                    "free": buffer.free,
                    "reserved": buffer.reserved,
                    "writing": counts["writing"],
                    "ready": counts["ready"],
                    "fault_held": buffer.fault_held,
                    "waiting_allocations": rank.waiting,
                }
            )
        return {
            "chunk_size": layout.chunk_size,
            "chunk_bytes": layout.chunk_bytes,
            "allocation_timeout_s": None if math.isinf(timeout_s) else timeout_s,
            "ranks": ranks,
        }

    def _bind(self, port: int) -> zmq.asyncio.Socket:
        socket = self._context.socket(zmq.ROUTER)
        socket.bind(tcp_address(self._host, port))
        self._sockets.append(socket)
        return socket

    def _apply_faults(self, faults: Faults) -> None:
        for rank in self._ranks:
            rank.buffer.hold_for_fault(faults.pd_buffer_held_chunks)
            rank.changed()
        self._update_gauges()

    def _update_gauges(self) -> None:
        metrics = self._metrics
        metrics.pd_buffer_free_chunks.set(sum(rank.buffer.free for rank in self._ranks))
        for worker_id, rank in enumerate(self._ranks):
            metrics.lmcache_buffer(worker_id, rank.buffer.used, rank.buffer.used * self._layout.chunk_bytes)

    async def _handshake(self, payload: bytes) -> bytes:
        msgspec.msgpack.decode(payload, type=InitSideMsg)
        return msgspec.msgpack.encode(
            NixlInitResponse(remote_agent_name=b"tandem-sim", remote_meta_bytes=b"")
        )

    def _allocation_handler(self, worker_id: int) -> Handler:
        rank = self._ranks[worker_id]

        async def handle(payload: bytes) -> bytes:
            reply = AllocResponse(remote_indexes=[])
            keys = 0
            try:
                message = msgspec.msgpack.decode(payload, type=AllocSideMsg)
                if isinstance(message, AllocRequest):
                    keys = len(message.keys)
                    reply = await rank.allocate(message)
                elif isinstance(message, SimWriteDone):
                    if rank.buffer.mark_written(message.keys):
                        self._metrics.kv_bytes_received.labels(connector=CONNECTOR).inc(message.num_bytes)
                elif isinstance(message, CancelNotif):
                    rank.cancel(message)
            except (AllocationError, msgspec.MsgspecError) as exc:
                # _handle_alloc_request answers every failure with -1s (1272-1286).
                log.warning("KV allocation on rank %d refused: %s", worker_id, exc)
                self._metrics.kv_alloc_failures.inc()
                reply = AllocResponse(remote_indexes=[-1] * max(keys, 1))
            self._update_gauges()
            return msgspec.msgpack.encode(reply)

        return handle
