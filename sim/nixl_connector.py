"""vLLM NIXL handoff (``NixlConnector``, ``kv_both``), as vLLM 0.33 does it: the decoder pulls the KV
from the prefiller. Paths are in vLLM 0.33's ``distributed/kv_transfer/kv_connector/v1/nixl/``.

Prefill leg: a request with ``kv_transfer_params.do_remote_decode`` that stops on the length cap
**or on a stop** (EOS, stop string or token: ``pull_scheduler.py`` 235-244) answers with the
``kv_transfer_params`` of ``request_finished`` (278-293): ``do_remote_prefill``,
``do_remote_decode``, ``remote_block_ids`` (one list per KV-cache group: here one group),
``remote_engine_id``, ``remote_request_id``, ``remote_host``, ``remote_port``, ``tp_size``,
``dcp_size``, ``pp_size``, ``remote_num_tokens`` (the prompt), ``remote_blocks_expiry_time``
(None on a prefiller), ``remote_registration_generation`` (0) and ``transfer_mode`` ("pull"). Its
KV blocks stay held (they count against its KV capacity) under a lease
(:mod:`tandem.sim.nixl_leases`): until a decoder has read them, or the lease runs out.

Decode leg: a request with ``do_remote_prefill`` reads the KV from ``remote_host:remote_port`` (the
prefiller's side channel, ZMQ ROUTER on ``VLLM_NIXL_SIDE_CHANNEL_HOST:_PORT``), heartbeating the
prefiller while the read is pending. The outcome:

- the read finds the lease: a hit (only the last prompt token is computed);
- the prefiller answers but its blocks do not hold that prompt's KV (the lease expired or was read
  already, or it holds another prompt): the read still succeeds, so a fast garbage answer
  (``stale_reads``); a read for a live lease ends it, whatever it read;
- the prefiller does not answer, or is another engine (engine id mismatch, ``base_worker.py``
  1229-1235): a failed load. ``kv_load_failure_policy`` (vLLM 0.33 default ``fail``,
  ``config/kv_transfer.py`` 88) then fails the request (``finish_reason`` "error": HTTP 500, or an
  error event in a stream); ``recompute`` recomputes the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import uuid
from array import array
from collections.abc import Awaitable
from dataclasses import dataclass, field
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
    SimulatedConnector,
)
from tandem.sim.faults import Faults, FaultState
from tandem.sim.metrics import SimMetrics
from tandem.sim.nixl_leases import Leases, LeaseTerms
from tandem.sim.settings import SimSettings
from tandem.sim.stopping import FinishReason
from tandem.sim.zmq_rpc import DealerClient, RpcError, serve_router, tcp_address

log = logging.getLogger(__name__)
_CONNECTOR = "nixl"
_HELD_ON = frozenset({"length", "stop"})  # FINISHED_LENGTH_CAPPED, FINISHED_STOPPED
_MIN_HEARTBEAT_S = 0.01  # vLLM beats every scheduler step when kv_lease_duration // 6 is 0


class NixlRead(msgspec.Struct, tag=True):
    """Decoder → prefiller: hand over these blocks (stands for vLLM's handshake and NIXL read)."""

    engine_id: str
    request_id: str
    block_ids: list[list[int]]
    prompt_digest: str


class NixlHeartbeat(msgspec.Struct, tag=True):
    """Decoder → prefiller: renew these leases (vLLM's ``"HB:req1,req2"`` NIXL notification)."""

    engine_id: str
    request_ids: list[str]


class NixlReadDone(msgspec.Struct, tag=True):
    ok: bool
    num_tokens: int = 0
    num_bytes: int = 0
    stale: bool = False  # the blocks did not hold this prompt's KV (lease ended, another prompt)
    reason: str = ""


class NixlHeartbeatDone(msgspec.Struct, tag=True):
    renewed: int


SideChannelMsg = NixlRead | NixlHeartbeat


class RemotePrefill(msgspec.Struct):
    """The ``kv_transfer_params`` of a decode leg (the prefill response's, passed on)."""

    remote_engine_id: str
    remote_request_id: str
    remote_host: str
    remote_port: int
    remote_block_ids: list[list[int]]  # one list per KV-cache group


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
class _Beats:
    """A decoder's pending reads from one prefiller engine, to heartbeat."""

    address: str
    request_ids: dict[str, int] = field(default_factory=dict)  # remote request id -> reads pending


class NixlConnector:
    def __init__(self, settings: SimSettings, metrics: SimMetrics, faults: FaultState) -> None:
        config = settings.kv_transfer_config
        assert config is not None
        self._settings = settings
        self._metrics = metrics
        self._faults = faults
        self._fail_on_load_error = config.kv_load_failure_policy == "fail"
        self._engine_id = config.engine_id or str(uuid.uuid4())
        self._host = settings.nixl.side_channel_host
        self._port = settings.nixl.side_channel_port
        self._leases = Leases(LeaseTerms.of(config.kv_lease_duration, settings.speed))
        self._lease_changed = asyncio.Event()
        self._context = zmq.asyncio.Context()
        self._socket: zmq.asyncio.Socket | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._peers: dict[str, DealerClient] = {}
        self._beat_peers: dict[str, DealerClient] = {}
        self._beats: dict[str, _Beats] = {}  # by remote engine id
        self._beating: asyncio.Task[None] | None = None
        self._block_ids = itertools.count()
        self._held: HeldBlocks | None = None

    async def start(self, held: HeldBlocks) -> None:
        self._held = held
        self._socket = self._context.socket(zmq.ROUTER)
        self._socket.bind(tcp_address(self._host, self._port))
        self._tasks = [
            asyncio.create_task(serve_router(self._socket, self._serve)),
            asyncio.create_task(self._reap()),
        ]
        self._faults.subscribe(self._apply_faults)
        log.info("NIXL side channel of engine %s on %s:%d", self._engine_id, self._host, self._port)

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._beating] if self._beating is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for peer in [*self._peers.values(), *self._beat_peers.values()]:
            peer.close()
        if self._socket is not None:
            self._socket.close(linger=0)
        self._context.term()

    def validate(self, request: EngineRequest) -> None:
        remote_prefill(request.kv_transfer_params)

    async def load(self, request: EngineRequest, *, continuation: bool, cached_tokens: int) -> LoadedKV:
        remote = remote_prefill(request.kv_transfer_params)
        if remote is None:
            return LoadedKV()
        metrics = self._metrics
        metrics.kv_lookups.labels(connector=_CONNECTOR).inc()
        address = tcp_address(remote.remote_host, remote.remote_port)
        self._track(remote, address, +1)
        try:
            reply = await self._read(remote, address, prompt_digest(request.prompt), len(request.prompt))
        finally:
            self._track(remote, address, -1)
        if not reply.ok:
            metrics.kv_misses.labels(connector=_CONNECTOR).inc()
            log.warning(
                "KV read of %s from %s failed (%s): %s",
                remote.remote_request_id,
                address,
                reply.reason,
                "failing the request" if self._fail_on_load_error else "recomputing",
            )
            return LoadedKV(failed=self._fail_on_load_error)
        metrics.kv_bytes_received.labels(connector=_CONNECTOR).inc(reply.num_bytes)
        if reply.stale:
            metrics.kv_stale_reads.labels(connector=_CONNECTOR).inc()
            return LoadedKV(reply.num_tokens, corrupt=True)
        metrics.kv_hits.labels(connector=_CONNECTOR).inc()
        return LoadedKV(reply.num_tokens)

    def on_prefill_done(self, request: EngineRequest, first_token: int) -> Awaitable[object] | None:
        return None

    def request_finished(self, request: EngineRequest, reason: FinishReason) -> FinishedHandoff:
        params = request.kv_transfer_params
        if not params or not params.get("do_remote_decode") or reason not in _HELD_ON:
            return FinishedHandoff()
        settings = self._settings
        blocks = -(-len(request.prompt) // settings.block_size)
        block_ids = [[next(self._block_ids) for _ in range(blocks)]]
        now = asyncio.get_running_loop().time()
        self._leases.grant(
            request.request_id, prompt_digest(request.prompt), len(request.prompt), block_ids, now
        )
        if self._faults.faults.expire_kv_leases:
            self._leases.expire_all(now)
            self._metrics.faults_injected.labels(fault="expire_kv_leases").inc()
        self._lease_changed.set()
        return FinishedHandoff(
            {
                "do_remote_prefill": True,
                "do_remote_decode": False,
                "remote_block_ids": block_ids,
                "remote_engine_id": self._engine_id,
                "remote_request_id": request.request_id,
                "remote_host": self._host,
                "remote_port": self._port,
                "tp_size": settings.tensor_parallel_size,  # max(TP, DCP); the simulator has no DCP
                "dcp_size": 1,
                "pp_size": settings.pipeline_parallel_size,
                "remote_num_tokens": len(request.prompt),  # num_computed_tokens when it finished
                "remote_blocks_expiry_time": None,  # set on decoders only (bidirectional transfers)
                "remote_registration_generation": 0,
                "transfer_mode": "pull",
            },
            hold_blocks=True,
        )

    def buffer_state(self) -> dict[str, Any] | None:
        return None

    async def _read(self, remote: RemotePrefill, address: str, digest: str, tokens: int) -> NixlReadDone:
        ask = NixlRead(remote.remote_engine_id, remote.remote_request_id, remote.remote_block_ids, digest)
        peer = self._peers.setdefault(address, DealerClient(self._context, address))
        wait_s = 2 * self._transfer_s(tokens) + self._settings.nixl.read_grace_s
        try:
            return msgspec.msgpack.decode(
                await peer.request(msgspec.msgpack.encode(ask), wait_s), type=NixlReadDone
            )
        except (RpcError, msgspec.MsgspecError) as exc:
            return NixlReadDone(ok=False, reason=str(exc))

    def _transfer_s(self, tokens: int) -> float:
        return self._settings.timing.kv_transfer_ms_per_token * tokens / 1000 / self._settings.speed

    # -- the decoder's heartbeats -----------------------------------------------------------------

    def _track(self, remote: RemotePrefill, address: str, change: int) -> None:
        beats = self._beats.setdefault(remote.remote_engine_id, _Beats(address))
        pending = beats.request_ids.get(remote.remote_request_id, 0) + change
        if pending > 0:
            beats.request_ids[remote.remote_request_id] = pending
        else:
            beats.request_ids.pop(remote.remote_request_id, None)
            if not beats.request_ids:
                del self._beats[remote.remote_engine_id]
        if self._beats and (self._beating is None or self._beating.done()):
            self._beating = asyncio.create_task(self._heartbeat())

    async def _heartbeat(self) -> None:
        """Beat every ``kv_lease_duration // 6`` while reads are pending, the first at once."""
        interval = max(self._leases.terms.heartbeat_s, _MIN_HEARTBEAT_S)
        while self._beats:
            if not self._faults.faults.drop_heartbeats:
                await asyncio.gather(
                    *(self._beat(engine, beats) for engine, beats in list(self._beats.items()))
                )
            await asyncio.sleep(interval)

    async def _beat(self, engine_id: str, beats: _Beats) -> None:
        peer = self._beat_peers.setdefault(beats.address, DealerClient(self._context, beats.address))
        beat = NixlHeartbeat(engine_id, list(beats.request_ids))
        try:
            await peer.request(msgspec.msgpack.encode(beat), self._settings.nixl.read_grace_s)
        except RpcError as exc:
            log.debug("heartbeat to engine %s failed: %s", engine_id, exc)

    # -- the prefiller's side channel and leases ---------------------------------------------------

    async def _serve(self, payload: bytes) -> bytes:
        try:
            message = msgspec.msgpack.decode(payload, type=SideChannelMsg)
        except msgspec.MsgspecError as exc:
            return msgspec.msgpack.encode(NixlReadDone(ok=False, reason=f"undecodable message: {exc}"))
        if isinstance(message, NixlHeartbeat):
            now = asyncio.get_running_loop().time()
            renewed = (
                self._leases.renew(message.request_ids, now) if message.engine_id == self._engine_id else 0
            )
            return msgspec.msgpack.encode(NixlHeartbeatDone(renewed))
        return msgspec.msgpack.encode(await self._serve_read(message))

    async def _serve_read(self, ask: NixlRead) -> NixlReadDone:
        """A decoder reads blocks: the prompt's KV if its lease holds them, garbage otherwise."""
        if ask.engine_id != self._engine_id:
            return NixlReadDone(ok=False, reason=f"engine id mismatch: this is {self._engine_id}")
        lease = self._leases.get(ask.request_id)
        exact = lease is not None and lease.digest == ask.prompt_digest and lease.block_ids == ask.block_ids
        blocks = sum(map(len, ask.block_ids))
        tokens = lease.num_tokens if lease is not None and exact else blocks * self._settings.block_size
        await asyncio.sleep(self._transfer_s(tokens))
        num_bytes = tokens * self._settings.kv_bytes_per_token
        self._metrics.kv_bytes_sent.labels(connector=_CONNECTOR).inc(num_bytes)
        held = lease is not None and self._leases.get(ask.request_id) is lease
        if held:  # the decoder's completion notification ends the lease
            self._leases.end(ask.request_id)
            self._release(ask.request_id)
        else:  # pull_worker.py 668-681: read after the lease ended; the blocks hold anything by now
            self._metrics.nixl_notifications_after_expiry.inc()
            log.error("KV blocks of %s were read after their lease ended: garbage", ask.request_id)
        return NixlReadDone(ok=True, num_tokens=tokens, num_bytes=num_bytes, stale=not (held and exact))

    async def _reap(self) -> None:
        """Free the blocks of every lease that runs out (vLLM checks at every engine step)."""
        loop = asyncio.get_running_loop()
        while True:
            for request_id in self._leases.reap(loop.time()):
                log.warning("KV blocks of %s were not read before their lease expired: freed", request_id)
                self._metrics.nixl_kv_expired_reqs.inc()
                self._release(request_id)
            expiry = self._leases.next_expiry()
            self._lease_changed.clear()
            wait_s = None if expiry is None else max(0.0, expiry - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lease_changed.wait(), wait_s)

    def _release(self, request_id: str) -> None:
        if self._held is not None:
            self._held.release(request_id)

    def _apply_faults(self, faults: Faults) -> None:
        if faults.expire_kv_leases and len(self._leases):
            self._leases.expire_all(asyncio.get_running_loop().time())
            self._lease_changed.set()


NIXL = SimulatedConnector("NixlConnector", NixlConnector)
