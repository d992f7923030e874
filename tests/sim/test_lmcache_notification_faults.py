"""Faults of an LMCache prefiller's notifications to the proxy port, for the router's tests: bad
messages before the real ``ProxyNotif`` (oversized, malformed, wrongly typed, multipart), and
notifications dropped for a fraction of requests."""

from __future__ import annotations

import msgspec
import pytest
from lmcache_pair import lmcache_pair, metric, next_message, notification, prefill, tokens

from tandem.sim.pd_messages import ProxyNotif
from tandem.sim.testing import eventually


def _proxy_notif(frame: bytes) -> ProxyNotif:
    """As a proxy decodes a notification: msgpack of the tagged struct, req_id a string."""
    return msgspec.msgpack.decode(frame, type=ProxyNotif)


@pytest.mark.parametrize("kind", ["oversized", "malformed", "wrong_type", "multipart"])
async def test_a_junk_message_reaches_the_proxy_before_each_real_notification(kind: str) -> None:
    async with lmcache_pair(4) as pair:
        await pair.prefiller.post(
            "/admin/faults", json={"junk_notification": kind, "junk_notification_bytes": 100_000}
        )
        await prefill(pair, await tokens(pair.decoder.client, 100, "junk"), "real")
        junk = await next_message(pair.pull)
        match kind:
            case "oversized":
                assert len(junk) == 1 and len(_proxy_notif(junk[0]).req_id) == 100_000
            case "malformed":
                with pytest.raises(msgspec.DecodeError):
                    msgspec.msgpack.decode(junk[0])
            case "wrong_type":
                with pytest.raises(msgspec.ValidationError):
                    _proxy_notif(junk[0])
            case "multipart":
                assert len(junk) == 2
        assert await notification(pair.pull) == {"type": "ProxyNotif", "req_id": "real"}
        assert (
            await metric(pair.prefiller, "tandem_sim_faults_injected_total", fault="junk_notification") == 1
        )


async def test_a_drop_rate_silences_some_notifications_and_not_others() -> None:
    async with lmcache_pair(10) as pair:  # one chunk each, never read: room for all ten
        await pair.prefiller.post("/admin/faults", json={"drop_notification_rate": 0.5})
        for n in range(10):
            await prefill(pair, await tokens(pair.decoder.client, 20, f"rate-{n}"), f"rate-{n}")

        async def outcome(name: str) -> float:
            return await metric(pair.prefiller, "tandem_sim_proxy_notifications_total", outcome=name)

        received: list[str] = []

        async def accounted_for() -> bool:
            while await pair.pull.poll(0):
                received.append((await notification(pair.pull))["req_id"])
            return len(received) + await outcome("dropped") == 10

        await eventually(accounted_for)
        assert 0 < len(received) < 10 and len(received) == await outcome("sent")
