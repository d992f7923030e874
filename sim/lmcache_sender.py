"""LMCache PD handoff, the prefiller's end (``kv_producer``, ``pd_role: sender``), over real ZMQ
sockets, as LMCache 0.5.6's async PD backend does it (``v1/storage_backend/pd_backend_async.py``,
the default ``pd_backend_mode``; line numbers below are that file's).

A request carrying ``kv_transfer_params.disagg_spec`` sends its prompt's KV, once prefilled, to the
decoder the spec names, from every rank that stores KV (every worker rank; only the first with MLA):

1. First contact with a receiver rank: a ``NixlInitRequest`` handshake on ``receiver_init_port[r]``.
   LMCache runs it inside the forward pass and waits with no timeout (``_ensure_peer_connection``,
   691-731: ``future.result()``), so the whole engine stalls until the decoder answers, for ever if
   it never does.
2. An ``AllocRequest`` for the rank's chunks (``req_id``, ``total_chunks`` = ceil(prompt / chunk
   size), ``is_last_batch``) on ``receiver_alloc_port[r]``, DEALER → ROUTER. This runs off the
   forward pass (the prefill answers without waiting for it); the sender waits for the answer for
   ever, one request at a time per receiver (``_async_remote_allocate``, 745-763, under a lock), so
   an allocation the receiver holds back holds back every later one to that receiver.
3. Keys in ``already_sent_indexes`` are not sent again; a -1 aborts the rank's transfer with no
   notification (862-913). Otherwise the modelled transfer time passes and a ``SimWriteDone`` stands
   for the RDMA write; a failed write cancels the allocation (``CancelNotif``, 1118-1150).
4. Once the rank has completed ``total_chunks`` chunks it pushes one ``ProxyNotif{req_id}`` (ZMQ
   PUSH) to ``pd_proxy_host:pd_proxy_port`` (``_check_and_send_proxy_notif``, 1003-1027). With
   ``discard_partial_chunks`` and a prompt that is not a whole number of chunks, fewer chunks than
   ``total_chunks`` exist, so that notification never comes, as in LMCache 0.5.6.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from tandem.sim.connector import EngineRequest, FinishedHandoff, HeldBlocks, LoadedKV
from tandem.sim.faults import FaultState, JunkNotification
from tandem.sim.lmcache_connector import CONNECTOR, DTYPE, DisaggSpec, FirstTokens, Layout, parse_disagg_spec
from tandem.sim.lmcache_cpu_tier import CpuTier
from tandem.sim.metrics import SimMetrics
from tandem.sim.pd_buffer import ChunkKeys, total_chunks
from tandem.sim.pd_messages import (
    KV_2LTD,
    AllocRequest,
    AllocResponse,
    CancelNotif,
    NixlInitRequest,
    NixlInitResponse,
    ProxyNotif,
    SimWriteDone,
)
from tandem.sim.settings import LMCacheConfig, SimSettings
from tandem.sim.stopping import FinishReason
from tandem.sim.zmq_rpc import DealerClient, RpcError, tcp_address

log = logging.getLogger(__name__)
_WRITE_TIMEOUT_S = 5.0  # the stand-in for an RDMA write to a peer that is gone
_JUNK_REQ_ID = "tandem-sim-junk"


class ProtocolError(ValueError):
    """The receiver answered something LMCache's sender rejects (``RuntimeError`` there)."""


def junk_frames(kind: JunkNotification, size: int) -> list[bytes]:
    """The frames of one bad message to the proxy port (see ``Faults.junk_notification``)."""
    match kind:
        case "oversized":
            return [msgspec.msgpack.encode(ProxyNotif(req_id="j" * size))]
        case "malformed":
            return [b"\xc1 tandem-sim: these bytes are not msgpack"]  # 0xc1 is never used in msgpack
        case "wrong_type":
            return [msgspec.msgpack.encode({"type": "ProxyNotif", "req_id": 42})]
        case "multipart":
            return [msgspec.msgpack.encode(ProxyNotif(req_id=_JUNK_REQ_ID)), b"an unexpected second frame"]


class LMCacheSender:
    """The prefiller's end (``kv_producer``)."""

    def __init__(
        self, settings: SimSettings, lmcache: LMCacheConfig, metrics: SimMetrics, faults: FaultState
    ) -> None:
        assert lmcache.pd_proxy_host is not None and lmcache.pd_proxy_port is not None
        self._settings = settings
        self._layout = Layout.of(settings, lmcache)
        self._tier = CpuTier.of(lmcache, self._layout)
        self._proxy_address = tcp_address(lmcache.pd_proxy_host, lmcache.pd_proxy_port)
        self._metrics = metrics
        self._faults = faults
        self._first_tokens = FirstTokens()
        self._context = zmq.asyncio.Context()
        self._proxy: zmq.asyncio.Socket | None = None
        self._peers: dict[tuple[str, int, int], asyncio.Task[DealerClient]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, held: HeldBlocks) -> None:
        self._proxy = self._context.socket(zmq.PUSH)
        self._proxy.connect(self._proxy_address)

    async def stop(self) -> None:
        for task in self._tasks:  # the handshakes among them
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for peer in self._peers.values():
            if not peer.cancelled() and peer.exception() is None:
                peer.result().close()
        if self._proxy is not None:
            self._proxy.close(linger=0)
        self._context.term()

    def validate(self, request: EngineRequest) -> None:
        parse_disagg_spec(request.kv_transfer_params, self._layout.world_size)

    async def load(self, request: EngineRequest, *, continuation: bool, cached_tokens: int) -> LoadedKV:
        """A CPU-tier hit (lmcache_cpu_tier.py), loaded at the timing's cost per token."""
        if self._tier is None:
            return LoadedKV()
        keys = self._layout.keys(request.prompt, request.kv_transfer_params)
        hit = self._tier.lookup(self._layout.rank_keys(keys, 0), keys)
        return LoadedKV(hit, load_ms_per_token=self._settings.timing.offload_load_ms_per_token)

    def on_prefill_done(self, request: EngineRequest, first_token: int) -> Awaitable[object] | None:
        self._first_tokens.record(request, first_token)
        keys = self._layout.keys(request.prompt, request.kv_transfer_params)
        if self._tier is not None:
            self._tier.store(self._layout.rank_keys(keys, 0))
        spec = parse_disagg_spec(request.kv_transfer_params, self._layout.world_size)
        if spec is None:
            return None
        total = total_chunks(len(request.prompt), self._layout.chunk_size)
        handshakes = []
        for rank in self._layout.storing_ranks:
            address = (spec.receiver_host, spec.receiver_init_port[rank], spec.receiver_alloc_port[rank])
            peer = self._peers.get(address)
            if peer is None:
                peer = self._peers[address] = self._spawn(self._handshake(*address))
                handshakes.append(peer)
            self._spawn(self._send_rank(spec, rank, keys, total, peer))
        return asyncio.wait(handshakes) if handshakes else None

    def request_finished(self, request: EngineRequest, reason: FinishReason) -> FinishedHandoff:
        return self._first_tokens.finished(request)

    def buffer_state(self) -> dict[str, Any] | None:
        return None

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _handshake(self, host: str, init_port: int, alloc_port: int) -> DealerClient:
        handshake = DealerClient(self._context, tcp_address(host, init_port))
        try:
            hello = NixlInitRequest(local_meta_bytes=b"tandem-sim")
            answer = await handshake.request(msgspec.msgpack.encode(hello), None)
            msgspec.msgpack.decode(answer, type=NixlInitResponse)
        except BaseException:
            del self._peers[(host, init_port, alloc_port)]  # the next request tries again
            raise
        finally:
            handshake.close()
        return DealerClient(self._context, tcp_address(host, alloc_port))

    async def _send_rank(
        self, spec: DisaggSpec, rank: int, keys: ChunkKeys, total: int, handshake: asyncio.Task[DealerClient]
    ) -> None:
        try:
            peer = await handshake
            await self._transfer(peer, spec, rank, keys, total)
        except (RpcError, ProtocolError, msgspec.MsgspecError, zmq.ZMQError) as exc:
            log.warning(
                "KV transfer of %s (rank %d) to %s failed: %s", spec.req_id, rank, spec.receiver_host, exc
            )

    async def _transfer(
        self, peer: DealerClient, spec: DisaggSpec, rank: int, keys: ChunkKeys, total: int
    ) -> None:
        layout = self._layout
        rank_keys = layout.rank_keys(keys, rank)
        if not rank_keys:
            return  # nothing to store (a prompt shorter than one chunk, discarded)
        request = AllocRequest(
            keys=rank_keys,
            fmt=KV_2LTD,
            shape=layout.chunk_shape,
            dtype=DTYPE,
            last_chunk_toks=keys.lengths[-1],
            req_id=spec.req_id,
            is_last_batch=True,
            total_chunks=total,
        )
        reply = msgspec.msgpack.decode(
            await peer.request(msgspec.msgpack.encode(request), None), type=AllocResponse
        )
        to_send = _keys_to_send(reply, len(rank_keys))
        if -1 in reply.remote_indexes:
            self._metrics.kv_alloc_failures.inc()
            log.warning(
                "decoder %s refused KV allocation for %s (rank %d)", spec.receiver_host, spec.req_id, rank
            )
            return
        if to_send:
            tokens = sum(keys.lengths[i] for i in to_send)
            sent = [rank_keys[i] for i in to_send]
            timing = self._settings.timing
            await asyncio.sleep(timing.kv_transfer_ms_per_token * tokens / 1000 / self._settings.speed)
            num_bytes = tokens * layout.bytes_per_token_per_rank
            done = SimWriteDone(req_id=spec.req_id, keys=sent, num_bytes=num_bytes)
            try:
                await peer.request(msgspec.msgpack.encode(done), _WRITE_TIMEOUT_S)
            except RpcError:
                await self._cancel(peer, spec.req_id, rank_keys)
                raise
            self._metrics.kv_bytes_sent.labels(connector=CONNECTOR).inc(num_bytes)
        if len(rank_keys) >= total:
            await self._notify(spec.req_id)

    async def _cancel(self, peer: DealerClient, req_id: str, keys: list[str]) -> None:
        try:
            await peer.request(
                msgspec.msgpack.encode(CancelNotif(req_id=req_id, keys=keys)), _WRITE_TIMEOUT_S
            )
        except RpcError as exc:
            log.warning("could not cancel the KV allocation of %s: %s", req_id, exc)

    async def _notify(self, req_id: str) -> None:
        assert self._proxy is not None
        faults = self._faults
        junk = faults.faults.junk_notification
        if junk is not None:
            await self._proxy.send_multipart(junk_frames(junk, faults.faults.junk_notification_bytes))
            self._metrics.faults_injected.labels(fault="junk_notification").inc()
        if faults.draw_dropped_notification():
            self._metrics.proxy_notifications.labels(outcome="dropped").inc()
            self._metrics.faults_injected.labels(fault="drop_notifications").inc()
            return
        await self._proxy.send(msgspec.msgpack.encode(ProxyNotif(req_id=req_id)))
        self._metrics.proxy_notifications.labels(outcome="sent").inc()


def _keys_to_send(reply: AllocResponse, count: int) -> list[int]:
    """The indexes the receiver allocated, checked as LMCache's sender checks them (862-883)."""
    already = set(reply.already_sent_indexes)
    if already and (min(already) < 0 or max(already) >= count):
        raise ProtocolError(f"invalid already_sent_indexes {reply.already_sent_indexes} for {count} keys")
    to_send = [i for i in range(count) if i not in already]
    if len(reply.remote_indexes) != len(to_send):
        raise ProtocolError(
            f"{len(reply.remote_indexes)} remote indexes for {len(to_send)} keys to send "
            f"({len(already)} already sent)"
        )
    return to_send
