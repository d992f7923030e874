"""LMCache's KV-arrival notifications: a ZMQ PULL socket, waiters per req_id, and forwarding.

Each prefiller TP rank PUSHes `ProxyNotif{req_id}` (msgpack, tagged struct) to its static
`pd_proxy_host:pd_proxy_port` once its KV chunks are written to the decoder. With several router
replicas behind one Service, that may be any replica. So every req_id names its owner,
`"<replica ip>:<notify port>/<uuid>"`, and a replica that receives another's notification forwards
the message unchanged to the owner's PULL socket — but only to owners it knows as replicas of its
pools (discovered, or given with --notify-peer), so a forged req_id cannot aim it elsewhere.

The port takes input from the network, so it trusts none of it: a frame larger than the largest
real notification (`MAXMSGSIZE`) makes ZMQ drop the sender's connection before the frame is read
(counted as a disconnect), and malformed messages or unknown owners are counted and logged at most
once per `LOG_INTERVAL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

import msgspec
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

log = logging.getLogger(__name__)

# A PUSH to an owner that has gone away queues at most this many messages, then drops.
FORWARD_HWM = 1000


class ProxyNotif(msgspec.Struct, tag="ProxyNotif", tag_field="type"):
    """LMCache's `ProxyNotif(PDMsgBase)` (`v1/storage_backend/pd_backend_async.py` and
    `pd_backend.py` of LMCache 0.5.6: `class PDMsgBase(msgspec.Struct, tag=True)`, so the tag is the
    class name under the default tag field `type`), sent msgpack-encoded in one frame."""

    req_id: str


_decoder = msgspec.msgpack.Decoder(ProxyNotif)

# Every req_id a notification carries is a router's own (`NotificationHub.new_req_id`):
# "<host>:<port>/<32 hex digits>", the host at most a 253-character DNS name.
MAX_REPLICA_ID = 253 + len(":65535")
MAX_REQ_ID = MAX_REPLICA_ID + 1 + 32
MAX_NOTIFICATION_BYTES = len(msgspec.msgpack.encode(ProxyNotif(req_id="x" * MAX_REQ_ID)))
# ZMQ_MAXMSGSIZE of the PULL socket: a little above the largest real notification.
MAXMSGSIZE = MAX_NOTIFICATION_BYTES + 64
LOG_INTERVAL_S = 60.0


class ThrottledLog:
    """Warnings about what strangers send, at most one per interval (with a count of the rest), so a
    flood of garbage cannot flood the log."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: float | None = None
        self._held_back = 0

    def warning(self, message: str, *args: object) -> bool:
        """Log now, or count it for the next report; whether it was logged."""
        now = self._clock()
        if self._last is not None and now - self._last < self._interval_s:
            self._held_back += 1
            return False
        if self._held_back:
            message = f"{message} (and {self._held_back} more since the last report)"
        log.warning(message, *args)
        self._last, self._held_back = now, 0
        return True


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
        if self.complete:
            self._done.set()

    @property
    def complete(self) -> bool:
        return self.got >= self.want

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
        *,
        on_disconnect: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(replica_id) > MAX_REPLICA_ID:
            raise ValueError(f"replica id {replica_id!r} is longer than {MAX_REPLICA_ID} characters")
        self.replica_id = replica_id
        self._endpoint = f"tcp://{bind_host}:{port}"
        self._is_peer = is_peer
        self._count = on_disposition
        self._on_disconnect = on_disconnect
        self._strangers = ThrottledLog(LOG_INTERVAL_S, clock)
        self._waiting: dict[str, Arrivals] = {}
        self._context = zmq.asyncio.Context()
        self._pull = self._context.socket(zmq.PULL)
        self._monitor: zmq.asyncio.Socket | None = None
        # Forwarding never waits (a full queue drops), so it uses plain sockets on the same context.
        self._sync_context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.shadow(self._context.underlying)
        self._forward: dict[str, zmq.Socket[bytes]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def new_req_id(self) -> str:
        return f"{self.replica_id}/{uuid.uuid4().hex}"

    def start(self) -> None:
        self._pull.setsockopt(zmq.LINGER, 0)
        self._pull.setsockopt(zmq.MAXMSGSIZE, MAXMSGSIZE)
        self._monitor = self._pull.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        self._pull.bind(self._endpoint)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._receive(), name="kv-notifications"),
            loop.create_task(self._watch_senders(), name="kv-notification-senders"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._monitor is not None:
            self._pull.disable_monitor()
            self._monitor.close(linger=0)
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

    async def _watch_senders(self) -> None:
        assert self._monitor is not None
        while True:
            event = parse_monitor_message(await self._monitor.recv_multipart())
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self._on_disconnect()
                self._strangers.warning(
                    "a notification sender disconnected (a prefiller restarted, or it sent a frame "
                    "over %d bytes)",
                    MAXMSGSIZE,
                )

    def dispatch(self, raw: bytes) -> None:
        try:
            req_id = _decoder.decode(raw).req_id
        except (msgspec.DecodeError, msgspec.ValidationError):
            self._count("invalid")
            self._strangers.warning("dropping a malformed notification (%d bytes): %r", len(raw), raw[:64])
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
            self._strangers.warning("dropping a notification for an unknown owner %r", owner)
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
