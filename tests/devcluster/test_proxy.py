"""The userspace kube-proxy: ClusterIP listeners, round-robin, dead backends skipped, follow-ups."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tandem.devcluster.processes import free_port
from tandem.devcluster.proxy import ServiceProxy
from tandem.devcluster.services import Catalog, ServicePort, ServiceView

CLUSTER_IP = "127.101.0.1"  # outside any devcluster's Service range, so tests never collide


async def start_backend(name: str) -> tuple[asyncio.Server, tuple[str, int]]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(name.encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[:2]


async def ask(port: int) -> bytes:
    reader, writer = await asyncio.open_connection(CLUSTER_IP, port)
    writer.write(b"hi")
    writer.write_eof()
    answer = await reader.read()
    writer.close()
    return answer


def catalog(port: int, *backends: tuple[str, int]) -> Catalog:
    view = ServiceView(
        namespace="serving",
        name="decode",
        cluster_ip=CLUSTER_IP,
        ports=(ServicePort("http", port, "TCP"),),
        backends={"http": backends},
    )
    return Catalog((view,))


@pytest.fixture
async def proxy() -> AsyncIterator[ServiceProxy]:
    proxy = ServiceProxy()
    yield proxy
    await proxy.close()


async def test_connections_take_turns_over_backends_and_follow_changes(proxy: ServiceProxy) -> None:
    first, first_address = await start_backend("a")
    second, second_address = await start_backend("b")
    port = free_port(CLUSTER_IP)
    async with first, second:
        await proxy.apply(catalog(port, first_address, second_address))
        assert sorted([await ask(port) for _ in range(4)]) == [b"a", b"a", b"b", b"b"]

        await proxy.apply(catalog(port, second_address))
        assert {await ask(port) for _ in range(3)} == {b"b"}

        await proxy.apply(Catalog())
        with pytest.raises(ConnectionRefusedError):
            await ask(port)


async def test_refusing_backend_is_skipped_and_none_left_closes(proxy: ServiceProxy) -> None:
    alive, alive_address = await start_backend("alive")
    dead_address = ("127.0.0.1", free_port())
    port = free_port(CLUSTER_IP)
    async with alive:
        await proxy.apply(catalog(port, dead_address, alive_address))
        assert {await ask(port) for _ in range(4)} == {b"alive"}
        await proxy.apply(catalog(port))
        reader, writer = await asyncio.open_connection(CLUSTER_IP, port)
        assert await reader.read() == b""  # accepted, then closed: no endpoint to send it to
        writer.close()
