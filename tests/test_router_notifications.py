"""LMCache notifications: counted per TP rank, forwarded to the owning replica, never elsewhere."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest
import zmq

from tandem.router.connectors.notify import NotificationHub, ProxyNotif, owner_of


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def notif(req_id: str) -> bytes:
    return msgspec.msgpack.encode(ProxyNotif(req_id=req_id))


class Prefiller:
    """A prefiller's side: ZMQ PUSH connected to one router replica's notify port."""

    def __init__(self, port: int) -> None:
        self.context = zmq.Context()
        self.push = self.context.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 0)
        self.push.connect(f"tcp://127.0.0.1:{port}")

    def send(self, raw: bytes) -> None:
        self.push.send(raw)

    def close(self) -> None:
        self.context.destroy(linger=0)


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[NotificationHub, NotificationHub, Counter[str], Counter[str]]]:
    port_a, port_b = free_port(), free_port()
    id_a, id_b = f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"
    peers = {id_a, id_b}
    counts_a: Counter[str] = Counter()
    counts_b: Counter[str] = Counter()

    def counter(counts: Counter[str]) -> Callable[[str], None]:
        return lambda disposition: counts.update([disposition])

    a = NotificationHub(id_a, "127.0.0.1", port_a, peers.__contains__, counter(counts_a))
    b = NotificationHub(id_b, "127.0.0.1", port_b, peers.__contains__, counter(counts_b))
    a.start()
    b.start()
    yield a, b, counts_a, counts_b
    await a.close()
    await b.close()


async def test_waits_for_one_notification_per_tp_rank(replicas: tuple[NotificationHub, ...]) -> None:
    a = replicas[0]
    req_id = a.new_req_id()
    assert owner_of(req_id) == a.replica_id
    arrivals = a.expect(req_id, 2)
    prefiller = Prefiller(int(a.replica_id.rsplit(":", 1)[1]))
    try:
        prefiller.send(notif(req_id))
        assert not await arrivals.wait(0.3)  # one rank is not enough
        prefiller.send(notif(req_id))
        assert await arrivals.wait(2.0)
    finally:
        prefiller.close()


async def test_notification_at_the_wrong_replica_reaches_the_owner(replicas: tuple) -> None:  # type: ignore[type-arg]
    a, b, counts_a, counts_b = replicas
    req_id = a.new_req_id()
    arrivals = a.expect(req_id, 1)
    prefiller = Prefiller(int(b.replica_id.rsplit(":", 1)[1]))  # its pd_proxy_host resolved to replica b
    try:
        prefiller.send(notif(req_id))
        assert await arrivals.wait(2.0)
    finally:
        prefiller.close()
    assert counts_b["forwarded"] == 1 and counts_a["own"] == 1


async def test_unknown_owners_and_garbage_are_dropped(replicas: tuple) -> None:  # type: ignore[type-arg]
    _, b, counts_a, counts_b = replicas
    prefiller = Prefiller(int(b.replica_id.rsplit(":", 1)[1]))
    stranger = f"127.0.0.1:{free_port()}"
    sink = zmq.Context()
    trap = sink.socket(zmq.PULL)
    trap.bind(f"tcp://{stranger}")
    try:
        prefiller.send(notif(f"{stranger}/abc"))  # a req_id aiming the forward elsewhere
        prefiller.send(notif("no-owner-at-all"))
        prefiller.send(b"\x93garbage")
        prefiller.send(notif(f"{b.replica_id}/unknown"))  # b's own format, but nobody waits for it
        late = b.new_req_id()
        b.expect(late, 1)
        prefiller.send(notif(late))
        arrivals = b.expect(late, 1)  # nothing further: proves ordering, the earlier messages are handled
        prefiller.send(notif(late))
        assert await arrivals.wait(2.0)
        assert trap.poll(200) == 0  # nothing was sent to the stranger
    finally:
        prefiller.close()
        sink.destroy(linger=0)
    assert counts_b["unknown_owner"] == 2 and counts_b["invalid"] == 1 and counts_b["late"] == 1
    assert counts_b["forwarded"] == 0 and counts_a == Counter()
