"""LMCache notifications: counted per TP rank, forwarded to the owning replica, never elsewhere;
and the port, open to the network, unhurt by what strangers send: oversized frames, garbage."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq
from operator_decisions import pool_body
from router_support import router_running

from tandem.api.spec import DisaggregationMode, KvConnector
from tandem.cli import build_parser
from tandem.devcluster.processes import free_port
from tandem.router.cli import settings_from_args
from tandem.router.connectors.notify import (
    LOG_INTERVAL_S,
    MAX_NOTIFICATION_BYTES,
    MAXMSGSIZE,
    NotificationHub,
    ProxyNotif,
    ThrottledLog,
    owner_of,
)
from tandem.router.discovery.kubernetes import KubernetesDiscovery
from tandem.router.pool import PoolConfig
from tandem.router.settings import RouterSettings, StaticPoolSettings


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


def counter(counts: Counter[str]) -> Callable[[str], None]:
    return lambda disposition: counts.update([disposition])


def lone_hub(counts: Counter[str], **options: Any) -> tuple[NotificationHub, int]:
    """A replica on a free port that knows of no other, counting dispositions in `counts`,
    started; and its port."""
    port = free_port()
    hub = NotificationHub(f"127.0.0.1:{port}", "127.0.0.1", port, lambda _: False, counter(counts), **options)
    hub.start()
    return hub, port


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[NotificationHub, NotificationHub, Counter[str], Counter[str]]]:
    port_a, port_b = free_port(), free_port()
    id_a, id_b = f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}"
    peers = {id_a, id_b}
    counts_a: Counter[str] = Counter()
    counts_b: Counter[str] = Counter()
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


# LMCache 0.5.6's message, as `v1/storage_backend/pd_backend_async.py` (and `pd_backend.py`) define
# it at module level: `class PDMsgBase(msgspec.Struct, tag=True)`, `class ProxyNotif(PDMsgBase):
# req_id: str`. `tag=True` tags it with its (qualified) class name, so it is made here under that name.
LMCACHE_PD_MSG_BASE = msgspec.defstruct("PDMsgBase", [], tag=True)
LMCACHE_PROXY_NOTIF = msgspec.defstruct("ProxyNotif", [("req_id", str)], bases=(LMCACHE_PD_MSG_BASE,))


def test_notifications_are_encoded_as_lmcache_encodes_them() -> None:
    req_id = "10.0.0.7:7500/" + "f" * 32
    assert msgspec.msgpack.encode(ProxyNotif(req_id=req_id)) == msgspec.msgpack.encode(
        LMCACHE_PROXY_NOTIF(req_id=req_id)
    )


def test_the_size_limit_is_just_above_the_largest_real_notification() -> None:
    largest = f"{'h' * 253}:65535/{uuid.uuid4().hex}"  # a 253-character host name: the longest owner
    real = len(msgspec.msgpack.encode(LMCACHE_PROXY_NOTIF(req_id=largest)))
    assert real == MAX_NOTIFICATION_BYTES <= MAXMSGSIZE < real + 128
    with pytest.raises(ValueError, match="longer than"):
        NotificationHub(f"{'h' * 254}:65535", "127.0.0.1", free_port(), lambda _: False)


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise LookupError("no VmHWM in /proc/self/status")


async def until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    """Poll with a deadline: what is awaited happens on ZMQ's I/O thread, which sets no event."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


SENDER = """
import sys, zmq
context = zmq.Context()
push = context.socket(zmq.PUSH)
push.setsockopt(zmq.LINGER, 10000)
push.connect(sys.argv[1])
push.send(b"\\x00" * int(sys.argv[2]))
push.close()
context.term()
"""


@pytest.mark.parametrize("size", [MAXMSGSIZE + 1, 400 * 1024**2], ids=["limit+1", "400MB"])
async def test_an_oversized_frame_is_cut_off_unread_and_counted(size: int) -> None:
    """Before: no limit, so a 400 MB frame was read whole (the router reached 981 MB of its 1 GiB)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # noqa: ASYNC240 (resets VmHWM, Linux 4.0+)
    except OSError:
        pytest.skip("cannot reset this process's peak RSS")
    disconnects: list[int] = []
    counts: Counter[str] = Counter()
    hub, port = lone_hub(counts, on_disconnect=lambda: disconnects.append(1))
    before = peak_rss_bytes()
    sender = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SENDER, f"tcp://127.0.0.1:{port}", str(size)
    )
    try:
        await until(lambda: len(disconnects) >= 1)
        req_id = hub.new_req_id()
        arrivals = hub.expect(req_id, 1)
        prefiller = Prefiller(port)  # the port still serves well-behaved senders
        try:
            prefiller.send(notif(req_id))
            assert await arrivals.wait(5.0)
        finally:
            prefiller.close()
    finally:
        await sender.wait()
        await hub.close()
    assert peak_rss_bytes() - before < 64 * 1024**2
    assert counts == Counter({"own": 1})  # the frame never reached the handler


async def test_garbage_is_counted_each_time_and_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    counts: Counter[str] = Counter()
    hub, port = lone_hub(counts, clock=lambda: now[0])
    prefiller = Prefiller(port)
    try:
        with caplog.at_level(logging.WARNING, logger="tandem.router.connectors.notify"):
            for _ in range(50):
                prefiller.send(b"\x93garbage")
            prefiller.send(msgspec.msgpack.encode({"type": "AllocRequest", "keys": []}))  # not a ProxyNotif
            await until(lambda: counts["invalid"] == 51)
            now[0] += LOG_INTERVAL_S
            prefiller.send(notif("10.9.9.9:7500/" + "0" * 32))  # an owner nobody knows
            await until(lambda: counts["unknown_owner"] == 1)
    finally:
        prefiller.close()
        await hub.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "malformed" in warnings[0] and "unknown owner" in warnings[1]
    assert "and 50 more since the last report" in warnings[1]


def test_throttled_log_reports_what_it_held_back(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttle = ThrottledLog(60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        assert throttle.warning("bad frame %d", 1)
        assert not throttle.warning("bad frame %d", 2)
        now[0] = 59.9
        assert not throttle.warning("bad frame %d", 3)
        now[0] = 60.0
        assert throttle.warning("bad frame %d", 4)
    assert [r.getMessage() for r in caplog.records] == [
        "bad frame 1",
        "bad frame 4 (and 2 more since the last report)",
    ]


def _taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


@pytest.mark.parametrize(
    ("connector", "mode", "listens"),
    [
        (KvConnector.LMCACHE, DisaggregationMode.AUTO, True),
        (KvConnector.NIXL, DisaggregationMode.AUTO, False),  # the prefill answer carries the KV's address
        (KvConnector.NONE, DisaggregationMode.NEVER, False),  # aggregated: no handoffs at all
    ],
)
async def test_the_router_opens_its_notification_port_only_for_a_connector_that_notifies(
    connector: KvConnector, mode: DisaggregationMode, listens: bool
) -> None:
    """Before, every router bound its PULL socket, which takes unauthenticated frames from the
    network, whether or not any pool could send to it."""
    notify = free_port()
    static = StaticPoolSettings(model="m", decode=("http://127.0.0.1:9",), connector=connector, mode=mode)
    settings = RouterSettings(
        host="127.0.0.1", port=free_port(), notify_port=notify, static=static, scrape_interval_s=0
    )
    async with router_running(settings):
        assert _taken(notify) is listens


class _Pools:
    """A discovery sink that keeps the pools it is given."""

    def __init__(self) -> None:
        self.pools: dict[str, object] = {}

    def set_pool(self, config: PoolConfig) -> None:
        self.pools[config.name] = config

    def set_endpoints(self, pool: str, role: object, addresses: object) -> None: ...

    def set_peers(self, pool: str, peers: object) -> None: ...

    def mark_synced(self, pool: str) -> None: ...

    def drop_pool(self, pool: str) -> None: ...


@pytest.mark.parametrize(("argv", "warned"), [((), True), (("--notify-port", "7500"), False)])
def test_a_router_without_the_port_warns_once_of_an_lmcache_pool_it_cannot_hear(
    argv: tuple[str, ...], warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A router started before its pool turned to LMCache (a rollout in progress) says why its
    handoffs wait out their timeout, once, not on every status update."""
    parsed = settings_from_args(
        build_parser("router").parse_args(["router", "--pool", "sim-llama", *argv]), {}
    )
    sink = _Pools()
    discovery = KubernetesDiscovery(None, parsed, sink)  # type: ignore[arg-type]  # no API call is made
    body = pool_body(disaggregation__mode="Always")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            discovery._on_pool("MODIFIED", body)
    assert "sim-llama" in sink.pools
    warnings = [r.getMessage() for r in caplog.records if "no --notify-port" in r.getMessage()]
    assert len(warnings) == (1 if warned else 0)
