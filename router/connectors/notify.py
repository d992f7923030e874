"""LMCache's KV-arrival notifications: a ZMQ PULL socket, waiters per req_id, and forwarding.

Each prefiller TP rank PUSHes `ProxyNotif{req_id}` (msgpack, tagged struct) to its static
`pd_proxy_host:pd_proxy_port` once its KV chunks are written to the decoder. With several router
replicas behind one Service, that may be any replica. So every req_id names its owner,
`"<replica ip>:<notify port>/<uuid>"`, and a replica that receives another's notification forwards
the message unchanged to the owner's PULL socket — but only to owners it knows as replicas of its
pools (discovered, or given with --notify-peer), so a forged req_id cannot aim it elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

import msgspec
import zmq
import zmq.asyncio

log = logging.getLogger(__name__)

# A PUSH to an owner that has gone away queues at most this many messages, then drops.
FORWARD_HWM = 1000


class ProxyNotif(msgspec.Struct, tag="ProxyNotif", tag_field="type"):
    req_id: str


_decoder = msgspec.msgpack.Decoder(ProxyNotif)


def owner_of(req_id: str) -> str | None:
    owner, sep, _ = req_id.partition("/")
    return owner if sep and owner else None


class Arrivals:
    """Counts the notifications of one req_id until `want` (one per decoder TP rank) are in."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.got = 0
        self._done = asyncio.Event()

    def arrive(self) -> None:
        self.got += 1
        if self.got >= self.want:
            self._done.set()

    async def wait(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self._done.wait()
        except TimeoutError:
            return False
        return True


class NotificationHub:
    def __init__(
        self,
        replica_id: str,
        bind_host: str,
        port: int,
        is_peer: Callable[[str], bool],
        on_disposition: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.replica_id = replica_id
        self._endpoint = f"tcp://{bind_host}:{port}"
        self._is_peer = is_peer
        self._count = on_disposition
        self._waiting: dict[str, Arrivals] = {}
        self._context = zmq.asyncio.Context()
        self._pull = self._context.socket(zmq.PULL)
        # Forwarding never waits (a full queue drops), so it uses plain sockets on the same context.
        self._sync_context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(self._context.underlying)
        self._forward: dict[str, zmq.Socket[bytes]] = {}
        self._task: asyncio.Task[None] | None = None

    def new_req_id(self) -> str:
        return f"{self.replica_id}/{uuid.uuid4().hex}"

    def start(self) -> None:
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.bind(self._endpoint)
        self._task = asyncio.get_running_loop().create_task(self._receive(), name="kv-notifications")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # Sockets of the shadow context are not the asyncio context's to close: close them first,
        # or terminating the context waits for them forever.
        for socket in self._forward.values():
            socket.close(linger=0)
        self._context.destroy(linger=0)

    def expect(self, req_id: str, count: int) -> Arrivals:
        """Register before sending the prefill, so no notification can come first."""
        arrivals = self._waiting[req_id] = Arrivals(count)
        return arrivals

    def discard(self, req_id: str) -> None:
        self._waiting.pop(req_id, None)

    async def _receive(self) -> None:
        while True:
            raw = await self._pull.recv()
            try:
                self.dispatch(raw)
            except Exception:  # one bad message must not stop the receiver
                log.exception("notification handling failed")

    def dispatch(self, raw: bytes) -> None:
        try:
            req_id = _decoder.decode(raw).req_id
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._count("invalid")
            return
        owner = owner_of(req_id)
        if owner == self.replica_id:
            arrivals = self._waiting.get(req_id)
            if arrivals is None:
                self._count("late")  # its request timed out, failed or ended at the first token
            else:
                arrivals.arrive()
                self._count("own")
        elif owner is not None and self._is_peer(owner):
            self._send_to(owner, raw)
        else:
            log.warning("dropping a notification for an unknown owner %r", owner)
            self._count("unknown_owner")

    def _send_to(self, owner: str, raw: bytes) -> None:
        socket = self._forward.get(owner)
        if socket is None:
            socket = self._forward[owner] = self._sync_context.socket(zmq.PUSH)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDHWM, FORWARD_HWM)
            socket.connect(f"tcp://{owner}")
        try:
            socket.send(raw, flags=zmq.NOBLOCK)
        except zmq.Again:
            self._count("forward_dropped")
            return
        self._count("forwarded")
