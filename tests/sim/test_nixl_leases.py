"""NIXL block leases as vLLM 0.33 keeps them (``distributed/kv_transfer/kv_connector/v1/nixl/``): a
prefill's blocks are held ``kv_lease_duration`` seconds (default 30, ``base_scheduler.py`` 82-86),
a decoder with a pending read renews them by heartbeat every ``kv_lease_duration // 6`` seconds to
``now + kv_lease_duration * 2 // 3`` (``base_scheduler.py`` 88, ``base_worker.py`` 627-631 and
3380-3399), and an expired lease frees them (``base_worker.py`` 3352-3378); a read of freed blocks
gets garbage (``pull_worker.py`` 668-681 only logs it)."""

from __future__ import annotations

import pytest
from nixl_pair import aggregated, decode, kv_usage, metric, nixl_pair, prefill

from tandem.sim.nixl_leases import Leases, LeaseTerms
from tandem.sim.testing import eventually

LONG = {"prompt": "Describe the NIXL transfer path in detail. " * 30, "max_tokens": 8}


def test_lease_terms_follow_vllms_integer_arithmetic() -> None:
    assert LeaseTerms.of(30, speed=1) == LeaseTerms(30, 20, 5)
    assert LeaseTerms.of(30, speed=10) == LeaseTerms(3, 2, 0.5)
    assert LeaseTerms.of(1, speed=1) == LeaseTerms(1, 0, 0)  # a 1 s lease cannot be extended


def test_a_heartbeat_extends_a_lease_and_never_shortens_it() -> None:
    leases = Leases(LeaseTerms(30, 20, 5))
    leases.grant("r1", "digest", 100, [[0, 1]], now=100.0)
    assert leases.renew(["r1", "unknown"], now=101.0) == 1
    assert leases.next_expiry() == 130.0  # max(130, 121)
    leases.renew(["r1"], now=125.0)
    assert leases.next_expiry() == 145.0
    assert leases.reap(now=144.9) == []
    assert leases.reap(now=145.0) == ["r1"] and leases.get("r1") is None


def test_an_ended_lease_is_not_reaped_and_expire_all_runs_every_lease_out() -> None:
    leases = Leases(LeaseTerms(30, 20, 5))
    leases.grant("read", "d", 1, [[0]], now=0.0)
    leases.grant("unread", "d", 1, [[1]], now=0.0)
    assert leases.end("read") is not None
    leases.expire_all(now=5.0)
    assert leases.reap(now=5.0) == ["unread"] and len(leases) == 0


async def test_blocks_nobody_reads_are_freed_when_the_lease_expires() -> None:
    async with nixl_pair(lease_s=30, speed=20) as pair:  # 30 s of engine time: 1.5 s here
        params = (await prefill(pair, LONG))["kv_transfer_params"]
        assert await kv_usage(pair.prefiller) > 0

        async def freed() -> bool:
            return await kv_usage(pair.prefiller) == 0

        await eventually(freed)
        labels = {"model_name": "tandem/sim-model", "engine": "0"}
        assert await metric(pair.prefiller, "vllm:nixl_num_kv_expired_reqs_total", **labels) == 1
        # A decode leg that comes now reads blocks that hold nothing of its prompt any more.
        late = await decode(pair, LONG, params)
        assert late.status_code == 200 and late.json()["choices"][0]["text"] != await aggregated(LONG)
        assert await metric(pair.decoder, "tandem_sim_kv_stale_reads_total", connector="nixl") == 1
        after = "vllm:nixl_num_notifications_after_expiry_total"
        assert await metric(pair.prefiller, after, **labels) == 1


@pytest.mark.slow
@pytest.mark.parametrize("heartbeats", [True, False], ids=["heartbeats", "no-heartbeats"])
async def test_heartbeats_keep_a_lease_alive_through_a_read_longer_than_the_lease(heartbeats: bool) -> None:
    # Lease 1.2 s, heartbeats every 0.2 s extending it to now + 0.8 s; the read takes about 3 s.
    async with nixl_pair(lease_s=12, speed=10, transfer_ms_per_token=100) as pair:
        if not heartbeats:
            await pair.decoder.post("/admin/faults", json={"drop_heartbeats": True})
        params = (await prefill(pair, LONG))["kv_transfer_params"]
        decoded = await decode(pair, LONG, params)
        assert decoded.status_code == 200
        right = decoded.json()["choices"][0]["text"] == await aggregated(LONG)
        labels = {"model_name": "tandem/sim-model", "engine": "0"}
        expired = await metric(pair.prefiller, "vllm:nixl_num_kv_expired_reqs_total", **labels)
        stale = await metric(pair.decoder, "tandem_sim_kv_stale_reads_total", connector="nixl")
        assert (right, expired, stale) == ((True, 0, 0) if heartbeats else (False, 1, 1))
        assert await kv_usage(pair.prefiller) == 0


async def test_the_expire_kv_leases_fault_frees_a_prefills_blocks_at_once() -> None:
    async with nixl_pair() as pair:
        await pair.prefiller.post("/admin/faults", json={"expire_kv_leases": True})
        params = (await prefill(pair, LONG))["kv_transfer_params"]

        async def freed() -> bool:
            return await kv_usage(pair.prefiller) == 0

        await eventually(freed)
        decoded = await decode(pair, LONG, params)
        assert decoded.json()["choices"][0]["text"] != await aggregated(LONG)
        assert await metric(pair.decoder, "tandem_sim_kv_stale_reads_total", connector="nixl") == 1
