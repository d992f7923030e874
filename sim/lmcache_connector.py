"""LMCache PD handoff (``LMCacheConnectorV1``), both ends, over real ZMQ sockets.

Prefiller (``kv_producer``, ``pd_role: sender``): a request carrying
``kv_transfer_params.disagg_spec`` sends its prompt's KV, once prefilled, to the decoder the spec
names, from every TP rank ``r``: a handshake on ``receiver_init_port[r]`` (first contact only), an
``AllocRequest`` for the rank's chunks on ``receiver_alloc_port[r]`` (DEALER → ROUTER), the
modelled transfer time (``kv_transfer_ms_per_token`` * prompt tokens / speed), a ``SimWriteDone``,
then one ``ProxyNotif{req_id}`` pushed (ZMQ PUSH) to ``pd_proxy_host:pd_proxy_port``. The prefill
response, whose ``kv_transfer_params.first_tok`` is the first token (``ret_first_tok``), is sent once
every rank's allocation is answered (or 5 s passed without an answer): LMCache issues the
allocation inside the forward pass.
A refused allocation (-1: the decoder's PD buffer is full) aborts that rank: no notification.

Decoder (``kv_consumer``, ``pd_role: receiver``): binds the init and alloc ports of every TP rank on
``pd_peer_host`` and keeps received chunks in a PD buffer per rank. Every request looks its prompt
up, less its last ``skip_last_n_tokens`` tokens: all chunks ready on every rank is a hit (only the
rest is computed); present but still being written is an early read (fast, and the answer is
garbage, as reading half-written KV gives); otherwise the request recomputes its prompt, counted as
a miss when the prompt has the shape of a decode leg (it ends with generated text). Read chunks are
freed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from tandem.sim.connector import (
    EngineRequest,
    FinishedHandoff,
    HeldBlocks,
    LoadedKV,
    RequestError,
)
from tandem.sim.faults import FaultState
from tandem.sim.metrics import SimMetrics
from tandem.sim.pd_buffer import ChunkKeys, PDBuffer, chunk_keys
from tandem.sim.pd_messages import (
    KV_2LTD,
    AllocRequest,
    AllocResponse,
    AllocSideMsg,
    CancelNotif,
    InitSideMsg,
    NixlInitRequest,
    NixlInitResponse,
    ProxyNotif,
    SimWriteDone,
)
from tandem.sim.settings import LMCacheConfig, SimSettings, resolve_bind_host
from tandem.sim.stopping import FinishReason
from tandem.sim.zmq_rpc import DealerClient, Handler, RpcError, serve_router, tcp_address

log = logging.getLogger(__name__)
_ALLOC_TIMEOUT_S = 5.0
_DTYPE = "bfloat16"  # two bytes per element
_CONNECTOR = "lmcache"


class DisaggSpec(msgspec.Struct):
    """``kv_transfer_params.disagg_spec``: where the prefiller sends a request's KV."""

    req_id: str
    receiver_host: str
    receiver_init_port: list[int]
    receiver_alloc_port: list[int]


def parse_disagg_spec(params: dict[str, Any] | None, tp_size: int) -> DisaggSpec | None:
    if not params or params.get("disagg_spec") is None:
        return None
    try:
        spec = msgspec.convert(params["disagg_spec"], DisaggSpec)
    except msgspec.ValidationError as exc:
        raise RequestError(f"kv_transfer_params.disagg_spec: {exc}") from exc
    if len(spec.receiver_init_port) < tp_size or len(spec.receiver_alloc_port) < tp_size:
        raise RequestError(f"kv_transfer_params.disagg_spec needs a receiver port per TP rank ({tp_size})")
    return spec


@dataclass(frozen=True)
class _Layout:
    """How one process's KV is laid out: chunking, ranks, bytes."""

    model: str
    tp_size: int
    chunk_size: int
    bytes_per_token_per_rank: int
    hash_seed: bytes
    discard_partial: bool

    def keys(self, tokens: list[int]) -> ChunkKeys:
        return chunk_keys(tokens, self.chunk_size, self.hash_seed, discard_partial=self.discard_partial)

    def rank_keys(self, keys: ChunkKeys, rank: int) -> list[str]:
        return keys.for_rank(self.model, self.tp_size, rank)

    @property
    def chunk_shape(self) -> list[int]:
        # [K/V, layers, tokens, elements]: one "layer" of bfloat16 holding the rank's bytes per token.
        return [2, 1, self.chunk_size, max(1, self.bytes_per_token_per_rank // 4)]


def _layout(settings: SimSettings, lmcache: LMCacheConfig) -> _Layout:
    assert settings.kv_transfer_config is not None
    seed = settings.lmcache_hash_seed
    return _Layout(
        model=settings.model,
        tp_size=settings.tensor_parallel_size,
        chunk_size=lmcache.chunk_size,
        bytes_per_token_per_rank=settings.kv_bytes_per_token // settings.tensor_parallel_size,
        hash_seed=os.urandom(8) if seed is None else seed.to_bytes(8, "little", signed=True),
        discard_partial=settings.kv_transfer_config.discard_partial_chunks,
    )


class _FirstTokens:
    """``ret_first_tok``: remember each request's first token for its response."""

    def __init__(self) -> None:
        self._first: dict[str, int] = {}

    def record(self, request: EngineRequest, token: int) -> None:
        if request.kv_transfer_params and "ret_first_tok" in request.kv_transfer_params:
            self._first[request.request_id] = token

    def finished(self, request: EngineRequest) -> FinishedHandoff:
        token = self._first.pop(request.request_id, None)
        return FinishedHandoff({"first_tok": token} if token is not None else None)


class LMCacheSender:
    """The prefiller's end (``kv_producer``)."""

    def __init__(
        self, settings: SimSettings, lmcache: LMCacheConfig, metrics: SimMetrics, faults: FaultState
    ) -> None:
        assert lmcache.pd_proxy_host is not None and lmcache.pd_proxy_port is not None
        self._settings = settings
        self._layout = _layout(settings, lmcache)
        self._proxy_address = tcp_address(lmcache.pd_proxy_host, lmcache.pd_proxy_port)
        self._metrics = metrics
        self._faults = faults
        self._first_tokens = _FirstTokens()
        self._context = zmq.asyncio.Context()
        self._proxy: zmq.asyncio.Socket | None = None
        self._peers: dict[tuple[str, int, int], DealerClient] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, held: HeldBlocks) -> None:
        self._proxy = self._context.socket(zmq.PUSH)
        self._proxy.connect(self._proxy_address)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for peer in self._peers.values():
            peer.close()
        if self._proxy is not None:
            self._proxy.close(linger=0)
        self._context.term()

    def validate(self, request: EngineRequest) -> None:
        parse_disagg_spec(request.kv_transfer_params, self._layout.tp_size)

    async def load(self, request: EngineRequest, *, continuation: bool) -> LoadedKV:
        return LoadedKV()

    def on_prefill_done(self, request: EngineRequest, first_token: int) -> Awaitable[object] | None:
        self._first_tokens.record(request, first_token)
        spec = parse_disagg_spec(request.kv_transfer_params, self._layout.tp_size)
        if spec is None:
            return None
        keys = self._layout.keys(request.prompt)
        allocated = []
        for rank in range(self._layout.tp_size):
            answered = asyncio.get_running_loop().create_future()
            allocated.append(answered)
            task = asyncio.create_task(self._send_rank(spec, rank, keys, len(request.prompt), answered))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return asyncio.gather(*allocated)

    def request_finished(self, request: EngineRequest, reason: FinishReason) -> FinishedHandoff:
        return self._first_tokens.finished(request)

    async def _send_rank(
        self, spec: DisaggSpec, rank: int, keys: ChunkKeys, tokens: int, answered: asyncio.Future[None]
    ) -> None:
        try:
            await self._transfer(spec, rank, keys, tokens, answered)
        except (RpcError, msgspec.MsgspecError) as exc:
            log.warning(
                "KV transfer of %s (rank %d) to %s failed: %s", spec.req_id, rank, spec.receiver_host, exc
            )
        finally:
            if not answered.done():
                answered.set_result(None)

    async def _transfer(
        self, spec: DisaggSpec, rank: int, keys: ChunkKeys, tokens: int, answered: asyncio.Future[None]
    ) -> None:
        layout = self._layout
        peer = await self._peer(
            spec.receiver_host, spec.receiver_init_port[rank], spec.receiver_alloc_port[rank]
        )
        rank_keys = layout.rank_keys(keys, rank)
        request = AllocRequest(
            keys=rank_keys,
            fmt=KV_2LTD,
            shape=layout.chunk_shape,
            dtype=_DTYPE,
            last_chunk_toks=keys.lengths[-1] if keys.lengths else 0,
            req_id=spec.req_id,
            is_last_batch=True,
            total_chunks=len(rank_keys),
        )
        reply = msgspec.msgpack.decode(
            await peer.request(msgspec.msgpack.encode(request), _ALLOC_TIMEOUT_S), type=AllocResponse
        )
        answered.set_result(None)
        if -1 in reply.remote_indexes or len(reply.remote_indexes) != len(rank_keys):
            self._metrics.kv_alloc_failures.inc()
            log.warning(
                "decoder %s refused KV allocation for %s (rank %d)", spec.receiver_host, spec.req_id, rank
            )
            return
        timing = self._settings.timing
        await asyncio.sleep(timing.kv_transfer_ms_per_token * tokens / 1000 / self._settings.speed)
        num_bytes = sum(keys.lengths) * layout.bytes_per_token_per_rank
        done = SimWriteDone(req_id=spec.req_id, keys=rank_keys, num_bytes=num_bytes)
        await peer.request(msgspec.msgpack.encode(done), _ALLOC_TIMEOUT_S)
        self._metrics.kv_bytes_sent.labels(connector=_CONNECTOR).inc(num_bytes)
        await self._notify(spec.req_id)

    async def _peer(self, host: str, init_port: int, alloc_port: int) -> DealerClient:
        key = (host, init_port, alloc_port)
        peer = self._peers.get(key)
        if peer is None:
            handshake = DealerClient(self._context, tcp_address(host, init_port))
            try:
                hello = NixlInitRequest(local_meta_bytes=b"tandem-sim")
                msgspec.msgpack.decode(
                    await handshake.request(msgspec.msgpack.encode(hello), _ALLOC_TIMEOUT_S),
                    type=NixlInitResponse,
                )
            finally:
                handshake.close()
            peer = self._peers.setdefault(key, DealerClient(self._context, tcp_address(host, alloc_port)))
        return peer

    async def _notify(self, req_id: str) -> None:
        if self._faults.faults.drop_notifications:
            self._metrics.proxy_notifications.labels(outcome="dropped").inc()
            self._metrics.faults_injected.labels(fault="drop_notifications").inc()
            return
        assert self._proxy is not None
        await self._proxy.send(msgspec.msgpack.encode(ProxyNotif(req_id=req_id)))
        self._metrics.proxy_notifications.labels(outcome="sent").inc()


class LMCacheReceiver:
    """The decoder's end (``kv_consumer``)."""

    def __init__(self, settings: SimSettings, lmcache: LMCacheConfig, metrics: SimMetrics) -> None:
        assert settings.kv_transfer_config is not None
        assert lmcache.pd_peer_init_port is not None and lmcache.pd_peer_alloc_port is not None
        assert lmcache.pd_buffer_size is not None
        self._layout = _layout(settings, lmcache)
        self._skip_last = settings.kv_transfer_config.skip_last_n_tokens
        self._host = resolve_bind_host(lmcache.pd_peer_host, None)
        self._init_ports = lmcache.pd_peer_init_port
        self._alloc_ports = lmcache.pd_peer_alloc_port
        chunk_bytes = lmcache.chunk_size * self._layout.bytes_per_token_per_rank
        self._buffers = [PDBuffer(lmcache.pd_buffer_size // chunk_bytes) for _ in range(self._layout.tp_size)]
        self._metrics = metrics
        self._first_tokens = _FirstTokens()
        self._context = zmq.asyncio.Context()
        self._sockets: list[zmq.asyncio.Socket] = []
        self._servers: list[asyncio.Task[None]] = []
        metrics.pd_buffer_chunks.set(sum(b.capacity for b in self._buffers))
        self._update_free()

    async def start(self, held: HeldBlocks) -> None:
        for rank in range(self._layout.tp_size):
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

    async def load(self, request: EngineRequest, *, continuation: bool) -> LoadedKV:
        layout = self._layout
        lookup = request.prompt[: max(0, len(request.prompt) - self._skip_last)]
        keys = layout.keys(lookup)
        per_rank = [layout.rank_keys(keys, rank) for rank in range(layout.tp_size)]
        states = [
            {self._buffers[rank].state(rank_keys[i]) for rank, rank_keys in enumerate(per_rank)}
            for i in range(len(keys.lengths))
        ]
        self._metrics.kv_lookups.labels(connector=_CONNECTOR).inc()
        complete = bool(states) and all("absent" not in s for s in states)
        if complete and all(s == {"ready"} for s in states):
            self._metrics.kv_hits.labels(connector=_CONNECTOR).inc()
            loaded = LoadedKV(sum(keys.lengths))
            self._consume(per_rank, len(states))
        elif complete:
            self._metrics.kv_early_reads.labels(connector=_CONNECTOR).inc()
            loaded = LoadedKV(sum(keys.lengths), corrupt=True)
            self._consume(per_rank, len(states))
        else:
            if continuation:
                self._metrics.kv_misses.labels(connector=_CONNECTOR).inc()
            ready = next((i for i, s in enumerate(states) if s != {"ready"}), len(states))
            loaded = LoadedKV(sum(keys.lengths[:ready]))
            self._consume(per_rank, ready)
        return loaded

    def on_prefill_done(self, request: EngineRequest, first_token: int) -> Awaitable[object] | None:
        self._first_tokens.record(request, first_token)
        return None

    def request_finished(self, request: EngineRequest, reason: FinishReason) -> FinishedHandoff:
        return self._first_tokens.finished(request)

    def _bind(self, port: int) -> zmq.asyncio.Socket:
        socket = self._context.socket(zmq.ROUTER)
        socket.bind(tcp_address(self._host, port))
        self._sockets.append(socket)
        return socket

    def _consume(self, per_rank: list[list[str]], chunks: int) -> None:
        for buffer, rank_keys in zip(self._buffers, per_rank, strict=True):
            buffer.release(rank_keys[:chunks])
        self._update_free()

    def _update_free(self) -> None:
        self._metrics.pd_buffer_free_chunks.set(sum(b.free for b in self._buffers))

    async def _handshake(self, payload: bytes) -> bytes:
        msgspec.msgpack.decode(payload, type=InitSideMsg)
        return msgspec.msgpack.encode(
            NixlInitResponse(remote_agent_name=b"tandem-sim", remote_meta_bytes=b"")
        )

    def _allocation_handler(self, rank: int) -> Handler:
        buffer = self._buffers[rank]

        async def handle(payload: bytes) -> bytes:
            try:
                message = msgspec.msgpack.decode(payload, type=AllocSideMsg)
            except msgspec.DecodeError as exc:
                log.warning("undecodable message on the alloc port of rank %d: %s", rank, exc)
                return msgspec.msgpack.encode(AllocResponse(remote_indexes=[-1]))
            reply = AllocResponse(remote_indexes=[])
            if isinstance(message, AllocRequest):
                indexes = buffer.allocate(message.keys, message.req_id)
                if indexes is None:
                    self._metrics.kv_alloc_failures.inc()
                    indexes = [-1] * len(message.keys)
                reply = AllocResponse(remote_indexes=indexes)
            elif isinstance(message, SimWriteDone):
                if buffer.mark_written(message.keys):
                    self._metrics.kv_bytes_received.labels(connector=_CONNECTOR).inc(message.num_bytes)
            elif isinstance(message, CancelNotif):
                buffer.release(message.keys)
            self._update_free()
            return msgspec.msgpack.encode(reply)

        return handle
