"""Request/response over ZMQ DEALER → ROUTER, the shape LMCache's async PD backend and vLLM's NIXL
side channel use: the client sends ``[b"", payload]``, the server answers ``[identity, b"", reply]``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import zmq
import zmq.asyncio

log = logging.getLogger(__name__)


class RpcError(ConnectionError):
    """The peer did not answer in time (or the socket failed)."""


def tcp_address(host: str, port: int) -> str:
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


class DealerClient:
    """One peer; requests on it are answered in order, so they are sent one at a time."""

    def __init__(self, context: zmq.asyncio.Context, address: str) -> None:
        self._context = context
        self._address = address
        self._lock = asyncio.Lock()
        self._socket: zmq.asyncio.Socket | None = None

    async def request(self, payload: bytes, wait_s: float | None) -> bytes:
        """Send ``payload`` and wait for the answer (``wait_s`` None: for ever, as LMCache's sender)."""
        async with self._lock:
            socket = self._connected()
            try:
                await socket.send_multipart([b"", payload])
                frames = await asyncio.wait_for(socket.recv_multipart(), wait_s)
            except (TimeoutError, zmq.ZMQError) as exc:
                # A late answer would pair with the next request: start over with a fresh socket.
                self.close()
                raise RpcError(f"no answer from {self._address}: {exc or 'timed out'}") from exc
            except asyncio.CancelledError:
                self.close()
                raise
            reply: bytes = frames[-1]
            return reply

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def _connected(self) -> zmq.asyncio.Socket:
        if self._socket is None:
            self._socket = self._context.socket(zmq.DEALER)
            self._socket.connect(self._address)
        return self._socket


Handler = Callable[[bytes], Awaitable[bytes]]


async def serve_router(socket: zmq.asyncio.Socket, handle: Handler) -> None:
    """Answer every request on a bound ROUTER socket, each in its own task, until cancelled."""
    pending: set[asyncio.Task[None]] = set()
    send_lock = asyncio.Lock()

    async def answer(identity: bytes, payload: bytes) -> None:
        try:
            reply = await handle(payload)
        except Exception:
            log.exception("request on %s failed", socket.get(zmq.LAST_ENDPOINT))
            return
        async with send_lock:
            await socket.send_multipart([identity, b"", reply])

    try:
        while True:
            frames = await socket.recv_multipart()
            task = asyncio.create_task(answer(frames[0], frames[-1]))
            pending.add(task)
            task.add_done_callback(pending.discard)
    finally:
        for task in pending:
            task.cancel()
