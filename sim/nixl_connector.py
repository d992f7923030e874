"""vLLM NIXL handoff (``NixlConnector``, ``kv_both``): the decoder pulls the KV from the prefiller.

Prefill leg: a request with ``kv_transfer_params.do_remote_decode`` that stops on the length cap
answers with ``kv_transfer_params`` = ``{do_remote_prefill: true, do_remote_decode: false,
remote_block_ids, remote_engine_id, remote_request_id, remote_host, remote_port, tp_size}`` and
keeps its KV blocks (they count against its KV capacity) until a decoder reads them or the lease
(``VLLM_NIXL_ABORT_REQUEST_TIMEOUT``, scaled by ``--speed``) runs out. A request that stopped any
other way (EOS or a stop string on its one token) answers without params, as vLLM does.

Decode leg: a request with ``do_remote_prefill`` first reads the KV from ``remote_host:remote_port``
(the prefiller's side channel, ZMQ ROUTER on ``VLLM_NIXL_SIDE_CHANNEL_HOST:_PORT``): the prefiller
checks request id, engine id, block ids and the prompt, waits the modelled transfer time, frees the
blocks and answers. A successful read is a hit (only the last prompt token is computed); anything
else (unknown or expired request, other prompt, no answer within twice the transfer time plus
5 s) is a miss: the decoder recomputes the prompt, as vLLM's recompute policy does.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import uuid
from array import array
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import msgspec
import zmq
import zmq.asyncio

from tandem.sim.connector import EngineRequest, FinishedHandoff, HeldBlocks, LoadedKV, RequestError
from tandem.sim.metrics import SimMetrics
from tandem.sim.settings import SimSettings
from tandem.sim.stopping import FinishReason
from tandem.sim.zmq_rpc import DealerClient, RpcError, serve_router, tcp_address

log = logging.getLogger(__name__)
_CONNECTOR = "nixl"


class NixlRead(msgspec.Struct, tag=True):
    """Decoder → prefiller: hand over these blocks (stands for vLLM's handshake and NIXL read)."""

    engine_id: str
    request_id: str
    block_ids: list[int]
    prompt_digest: str


class NixlReadDone(msgspec.Struct, tag=True):
    ok: bool
    num_tokens: int = 0
    num_bytes: int = 0
    reason: str = ""


class RemotePrefill(msgspec.Struct):
    """The ``kv_transfer_params`` of a decode leg (the prefill response's, passed on)."""

    remote_engine_id: str
    remote_request_id: str
    remote_host: str
    remote_port: int
    remote_block_ids: list[int]


def prompt_digest(prompt: list[int]) -> str:
    return hashlib.blake2b(array("q", prompt).tobytes(), digest_size=8).hexdigest()


def remote_prefill(params: dict[str, Any] | None) -> RemotePrefill | None:
    if not params or not params.get("do_remote_prefill"):
        return None
    try:
        return msgspec.convert(params, RemotePrefill)
    except msgspec.ValidationError as exc:
        raise RequestError(f"kv_transfer_params with do_remote_prefill: {exc}") from exc


@dataclass
class _Lease:
    digest: str
    num_tokens: int
    block_ids: list[int]
    expiry: asyncio.TimerHandle


class NixlConnector:
    def __init__(self, settings: SimSettings, metrics: SimMetrics) -> None:
        assert settings.kv_transfer_config is not None
        self._settings = settings
        self._metrics = metrics
        self._engine_id = settings.kv_transfer_config.engine_id or str(uuid.uuid4())
        self._host = settings.nixl.side_channel_host
        self._port = settings.nixl.side_channel_port
        self._context = zmq.asyncio.Context()
        self._socket: zmq.asyncio.Socket | None = None
        self._server: asyncio.Task[None] | None = None
        self._peers: dict[str, DealerClient] = {}
        self._leases: dict[str, _Lease] = {}
        self._block_ids = itertools.count()
        self._held: HeldBlocks | None = None

    async def start(self, held: HeldBlocks) -> None:
        self._held = held
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.bind(tcp_address(self._host, self._port))
        self._server = asyncio.create_task(serve_router(self._socket, self._serve_read))
        log.info("NIXL side channel of engine %s on %s:%d", self._engine_id, self._host, self._port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.cancel()
            await asyncio.gather(self._server, return_exceptions=True)
        for lease in self._leases.values():
            lease.expiry.cancel()
        for peer in self._peers.values():
            peer.close()
        if self._socket is not None:
            self._socket.close(linger=0)
        self._context.term()

    def validate(self, request: EngineRequest) -> None:
        remote_prefill(request.kv_transfer_params)

    async def load(self, request: EngineRequest, *, continuation: bool) -> LoadedKV:
        remote = remote_prefill(request.kv_transfer_params)
        if remote is None:
            return LoadedKV()
        self._metrics.kv_lookups.labels(connector=_CONNECTOR).inc()
        ask = NixlRead(
            remote.remote_engine_id,
            remote.remote_request_id,
            remote.remote_block_ids,
            prompt_digest(request.prompt),
        )
        address = tcp_address(remote.remote_host, remote.remote_port)
        peer = self._peers.setdefault(address, DealerClient(self._context, address))
        wait_s = 2 * self._transfer_s(len(request.prompt)) + self._settings.nixl.read_grace_s
        try:
            answer = await peer.request(msgspec.msgpack.encode(ask), wait_s)
            reply = msgspec.msgpack.decode(answer, type=NixlReadDone)
        except (RpcError, msgspec.DecodeError) as exc:
            reply = NixlReadDone(ok=False, reason=str(exc))
        if not reply.ok:
            log.warning(
                "KV read of %s from %s failed (%s): recomputing",
                remote.remote_request_id,
                address,
                reply.reason,
            )
            self._metrics.kv_misses.labels(connector=_CONNECTOR).inc()
            return LoadedKV()
        self._metrics.kv_hits.labels(connector=_CONNECTOR).inc()
        self._metrics.kv_bytes_received.labels(connector=_CONNECTOR).inc(reply.num_bytes)
        return LoadedKV(reply.num_tokens)

    def on_prefill_done(self, request: EngineRequest, first_token: int) -> Awaitable[object] | None:
        return None

    def request_finished(self, request: EngineRequest, reason: FinishReason) -> FinishedHandoff:
        params = request.kv_transfer_params
        if not params or not params.get("do_remote_decode") or reason != "length":
            return FinishedHandoff()
        settings = self._settings
        blocks = -(-len(request.prompt) // settings.block_size)
        block_ids = [next(self._block_ids) for _ in range(blocks)]
        expiry = asyncio.get_running_loop().call_later(
            settings.nixl.lease_s / settings.speed, self._expire, request.request_id
        )
        self._leases[request.request_id] = _Lease(
            prompt_digest(request.prompt), len(request.prompt), block_ids, expiry
        )
        return FinishedHandoff(
            {
                "do_remote_prefill": True,
                "do_remote_decode": False,
                "remote_block_ids": block_ids,
                "remote_engine_id": self._engine_id,
                "remote_request_id": request.request_id,
                "remote_host": self._host,
                "remote_port": self._port,
                "tp_size": settings.tensor_parallel_size,
            },
            hold_blocks=True,
        )

    def _transfer_s(self, tokens: int) -> float:
        return self._settings.timing.kv_transfer_ms_per_token * tokens / 1000 / self._settings.speed

    def _expire(self, request_id: str) -> None:
        if self._leases.pop(request_id, None) is not None and self._held is not None:
            log.warning("KV blocks of %s were never read: lease expired", request_id)
            self._held.release(request_id)

    async def _serve_read(self, payload: bytes) -> bytes:
        try:
            ask = msgspec.msgpack.decode(payload, type=NixlRead)
        except msgspec.DecodeError as exc:
            return msgspec.msgpack.encode(NixlReadDone(ok=False, reason=f"undecodable read: {exc}"))
        lease = self._leases.get(ask.request_id)
        if ask.engine_id != self._engine_id or lease is None:
            return msgspec.msgpack.encode(NixlReadDone(ok=False, reason="no such request on this engine"))
        if lease.digest != ask.prompt_digest or lease.block_ids != ask.block_ids:
            return msgspec.msgpack.encode(NixlReadDone(ok=False, reason="blocks hold another prompt"))
        del self._leases[ask.request_id]
        lease.expiry.cancel()
        await asyncio.sleep(self._transfer_s(lease.num_tokens))
        if self._held is not None:
            self._held.release(ask.request_id)
        num_bytes = lease.num_tokens * self._settings.kv_bytes_per_token
        self._metrics.kv_bytes_sent.labels(connector=_CONNECTOR).inc(num_bytes)
        return msgspec.msgpack.encode(NixlReadDone(ok=True, num_tokens=lease.num_tokens, num_bytes=num_bytes))
