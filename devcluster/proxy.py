"""A userspace kube-proxy: one TCP listener per ``ClusterIP:port``, round-robin over ready endpoints.

Each connection goes to the next backend in turn; a backend that refuses is skipped, and with no
backend left the connection is closed at once (as a Service without endpoints rejects). Headless
Services get no listener (their names resolve to the endpoints themselves); UDP ports are not
proxied. Listeners follow the catalog: added, re-pointed or closed as Services and endpoints change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from tandem.devcluster.services import Catalog

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT = 2.0
_CHUNK = 65536

Backend = tuple[str, int]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class _Listener:
    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.backends: tuple[Backend, ...] = ()
        self._turn = 0

    def next_backends(self) -> list[Backend]:
        """All backends, starting at this connection's turn."""
        if not self.backends:
            return []
        start = self._turn % len(self.backends)
        self._turn += 1
        return [*self.backends[start:], *self.backends[:start]]

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        for host, port in self.next_backends():
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT):
                    backend_reader, backend_writer = await asyncio.open_connection(host, port)
            except (OSError, TimeoutError):
                continue
            try:
                await asyncio.gather(
                    _pipe(client_reader, backend_writer), _pipe(backend_reader, client_writer)
                )
            finally:
                await _close(backend_writer)
            break
        await _close(client_writer)


class ServiceProxy:
    """Listeners for every ClusterIP Service port of the latest catalog."""

    def __init__(self) -> None:
        self._listeners: dict[Backend, _Listener] = {}

    async def apply(self, catalog: Catalog) -> None:
        wanted: dict[Backend, tuple[Backend, ...]] = {}
        for view in catalog.services:
            if view.cluster_ip is None:
                continue
            for port in view.ports:
                if port.protocol == "TCP":
                    wanted[(view.cluster_ip, port.port)] = view.backends.get(port.name, ())
        for address in self._listeners.keys() - wanted.keys():
            await self._stop(address)
        for address, backends in wanted.items():
            listener = self._listeners.get(address) or await self._start(address)
            if listener is not None:
                listener.backends = backends

    async def _start(self, address: Backend) -> _Listener | None:
        listener = _Listener()
        try:
            listener.server = await asyncio.start_server(
                listener.handle, address[0], address[1], reuse_address=True
            )
        except OSError as exc:
            log.warning("cannot listen on %s:%s for a Service: %s", address[0], address[1], exc)
            return None
        self._listeners[address] = listener
        return listener

    async def _stop(self, address: Backend) -> None:
        server = self._listeners.pop(address).server
        if server is not None:
            server.close()
            # Connections already made are left to finish, as kube-proxy leaves them.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_CONNECT_TIMEOUT):
                    await server.wait_closed()

    async def close(self) -> None:
        for address in list(self._listeners):
            await self._stop(address)
