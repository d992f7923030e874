"""A decoder's LMCache PD buffer behaves as LMCache 0.5.6's async receiver
(``lmcache/v1/storage_backend/pd_backend_async.py``): a full buffer makes allocations *wait* (for
ever by default, ``pd_allocation_timeout_sec`` at most), only a request bigger than the whole buffer
is refused at once, keys already held come back in ``already_sent_indexes``, and nothing is
evicted: a chunk is freed only when a decode leg reads it. Driven over the real ZMQ/msgpack
protocol, by an in-process prefiller or by hand as one."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
import zmq
import zmq.asyncio
from lmcache_pair import (
    CHUNK,
    Decoder,
    decode,
    decoder_running,
    lmcache_pair,
    metric,
    notification,
    prefill,
    tokens,
)

from tandem.sim.pd_messages import KV_2LTD, AllocRequest, AllocResponse
from tandem.sim.settings import SimSettings
from tandem.sim.testing import eventually, sim_client

TWO_CHUNKS = 300  # tokens: a prompt of two chunks


def key(index: int) -> str:
    """A key as LMCache's CacheEngineKey.to_string() writes it (lmcache/utils.py 467-475)."""
    return f"tandem/sim-model@1@0@{0xABC0 + index:x}@bfloat16"


async def allocate(decoder: Decoder, request: AllocRequest, wait_s: float = 10.0) -> AllocResponse:
    """One AllocRequest on rank 0's alloc port, as the async sender sends it (DEALER, 745-763)."""
    context = zmq.asyncio.Context()
    dealer = context.socket(zmq.DEALER)
    try:
        dealer.connect(f"tcp://127.0.0.1:{decoder.alloc_ports[0]}")
        await dealer.send_multipart([b"", msgspec.msgpack.encode(request)])
        frames = await asyncio.wait_for(dealer.recv_multipart(), wait_s)
        return msgspec.msgpack.decode(frames[-1], type=AllocResponse)
    finally:
        dealer.close(linger=0)
        context.term()


def alloc_request(req_id: str, keys: list[str], total: int | None = None) -> AllocRequest:
    return AllocRequest(
        keys=keys,
        fmt=KV_2LTD,
        shape=[2, 1, CHUNK, 16384],
        dtype="bfloat16",
        last_chunk_toks=CHUNK,
        req_id=req_id,
        is_last_batch=True,
        total_chunks=len(keys) if total is None else total,
    )


async def rank0(decoder: Decoder) -> dict[str, Any]:
    state: dict[str, Any] = (await decoder.buffer())["ranks"][0]
    return state


async def test_a_full_buffer_makes_the_next_allocation_wait_until_a_decode_frees_chunks() -> None:
    async with lmcache_pair(3) as pair:
        first = await tokens(pair.decoder.client, TWO_CHUNKS, "first")
        second = await tokens(pair.decoder.client, TWO_CHUNKS, "second")
        answer = await prefill(pair, first, "first")
        assert await notification(pair.pull) == {"type": "ProxyNotif", "req_id": "first"}
        await prefill(pair, second, "second")  # async mode: it answers while its KV waits

        async def waiting() -> bool:
            state = await rank0(pair.decoder)
            return bool(state["waiting_allocations"] == 1 and state["used"] == 3)

        await eventually(waiting)
        assert await pair.pull.poll(0) == 0  # the second transfer is held back, not refused
        await decode(pair.decoder, first, answer["kv_transfer_params"]["first_tok"])
        assert await notification(pair.pull) == {"type": "ProxyNotif", "req_id": "second"}
        assert await metric(pair.decoder.client, "tandem_sim_kv_alloc_failures_total") == 0


async def test_a_request_bigger_than_the_whole_buffer_is_refused_at_once() -> None:
    """pd_backend_async.py 1318-1326, answered with -1s (1272-1286)."""
    async with decoder_running(3) as decoder:
        reply = await allocate(decoder, alloc_request("huge", [key(i) for i in range(4)]))
        assert reply == AllocResponse(remote_indexes=[-1] * 4, already_sent_indexes=[])
        assert (await rank0(decoder))["used"] == 0
        assert await metric(decoder.client, "tandem_sim_kv_alloc_failures_total") == 1


async def test_keys_already_held_come_back_in_already_sent_indexes() -> None:
    """contains(key, pin=True) → already_sent_indexes (pd_backend_async.py 1376-1381)."""
    async with decoder_running(4) as decoder:
        first = await allocate(decoder, alloc_request("r1", [key(0), key(1)]))
        assert first.already_sent_indexes == [] and len(set(first.remote_indexes)) == 2
        again = await allocate(decoder, alloc_request("r2", [key(0), key(1), key(2)]))
        assert again.already_sent_indexes == [0, 1]
        assert len(again.remote_indexes) == 1 and again.remote_indexes[0] not in first.remote_indexes
        assert (await rank0(decoder))["used"] == 3


async def test_chunks_no_decode_leg_reads_stay_allocated() -> None:
    """Nothing evicts or expires PD chunks in LMCache 0.5.6; only a decode leg's read frees them."""
    async with lmcache_pair(4) as pair:
        prompt = await tokens(pair.decoder.client, TWO_CHUNKS, "abandoned")
        await prefill(pair, prompt, "abandoned")  # the client left: its decode leg never comes
        await notification(pair.pull)
        for salt in ("other-1", "other-2"):
            other = await tokens(pair.decoder.client, 20, salt)
            response = await pair.decoder.client.post(
                "/v1/completions", json={"prompt": other, "max_tokens": 3}
            )
            assert response.status_code == 200
        assert (await rank0(pair.decoder))["used"] == 2
        labels = {"model_name": "tandem/sim-model", "worker_id": "0", "role": "worker"}
        labels["served_model_name"] = "tandem/sim-model"
        client = pair.decoder.client
        assert await metric(client, "lmcache:active_memory_objs_count", **labels) == 2
        assert await metric(client, "lmcache:local_cache_usage", **labels) == 2 * CHUNK * 131072
        assert await metric(client, "tandem_sim_pd_buffer_free_chunks") == 2


async def test_chunks_under_the_decoders_own_prefix_cache_are_never_read_or_freed() -> None:
    """The decode leg's load masks what vLLM's prefix cache holds (vllm_v1_adapter.py 818-823) and
    the masked chunks are skipped (token_database.py 421): they are never removed."""
    async with lmcache_pair(8) as pair:
        prompt = await tokens(pair.decoder.client, 600, "shared")  # three chunks, the last partial
        for req_id in ("turn-1", "turn-2"):
            answer = await prefill(pair, prompt, req_id)
            await notification(pair.pull)
            await decode(pair.decoder, prompt, answer["kv_transfer_params"]["first_tok"])
            if req_id == "turn-1":
                assert (await rank0(pair.decoder))["used"] == 0  # read, hence freed
        # turn 2: the decoder's prefix cache holds the prompt's blocks from turn 1, so LMCache
        # reads only the last chunk; the first two stay allocated for good.
        assert (await rank0(pair.decoder))["used"] == 2
        assert await metric(pair.decoder.client, "tandem_sim_kv_hits_total", connector="lmcache") == 2


@pytest.mark.parametrize("tagged", [False, True], ids=["untagged", "tagged"])
async def test_a_local_request_with_a_handoffs_first_chunk_reads_it_unless_the_handoff_is_tagged(
    tagged: bool,
) -> None:
    """Every request on a decoder looks its prompt up in the PD buffer, not only decode legs: a
    request the decoder prefills itself, starting with a chunk a handoff pushed (a shared system
    prompt), reads that chunk and frees it (`remove_after_retrieve`); the handoff's decode leg then
    finds no leading chunk, reads nothing, and its other chunks stay for good. A tag
    (`kv_transfer_params: {"lmcache.tag.<name>": value}`) is part of every chunk key
    (CacheEngineKey, lmcache/utils.py 428-475), so tagged chunks are found by same-tagged requests
    only."""
    tag = {"lmcache.tag.handoff": "h-1"} if tagged else {}
    async with lmcache_pair(8, enable_prefix_caching=False) as pair:  # a decoder as the operator renders it
        prompt = await tokens(pair.decoder.client, 600, "system")  # three chunks
        local = [*prompt[:CHUNK], *await tokens(pair.decoder.client, 100, "question")]
        body = {
            "prompt": prompt,
            "max_tokens": 1,
            "kv_transfer_params": {"ret_first_tok": True, "disagg_spec": pair.decoder.spec("h-1"), **tag},
        }
        answer = (await pair.prefiller.post("/v1/completions", json=body)).json()
        await notification(pair.pull)
        assert (await rank0(pair.decoder))["used"] == 3
        await pair.decoder.client.post("/v1/completions", json={"prompt": local, "max_tokens": 1})
        first = answer["kv_transfer_params"]["first_tok"]
        decode_leg = {
            "prompt": [*prompt, first],
            "max_tokens": 2,
            **({"kv_transfer_params": tag} if tag else {}),
        }
        await pair.decoder.client.post("/v1/completions", json=decode_leg)
        # Untagged: the local request took chunk 0; the decode leg found nothing and read nothing.
        assert (await rank0(pair.decoder))["used"] == (0 if tagged else 2)


async def test_an_allocation_that_outwaits_pd_allocation_timeout_sec_is_refused_and_rolled_back() -> None:
    # 20 s of LMCache's time at --speed 20: one second here.
    async with lmcache_pair(3, pd_allocation_timeout_sec=20.0) as pair:
        first = await tokens(pair.decoder.client, TWO_CHUNKS, "holder")
        second = await tokens(pair.decoder.client, TWO_CHUNKS, "waiter")
        await prefill(pair, first, "holder")
        await notification(pair.pull)
        await prefill(pair, second, "waiter")

        async def state_is(**expected: int) -> bool:
            state = await rank0(pair.decoder)
            return all(state[k] == v for k, v in expected.items())

        await eventually(lambda: state_is(waiting_allocations=1, used=3, reserved=2))
        await eventually(lambda: state_is(waiting_allocations=0, used=2, reserved=0))
        assert await metric(pair.decoder.client, "tandem_sim_kv_alloc_failures_total") == 1

        # The prefiller counts the refusal when the answer reaches it, after the decoder rolled back.
        async def prefiller_refused() -> bool:
            return await metric(pair.prefiller, "tandem_sim_kv_alloc_failures_total") == 1

        await eventually(prefiller_refused)
        assert await pair.pull.poll(0) == 0  # no notification for the refused request


async def test_the_pd_buffer_held_chunks_fault_fills_the_buffer_until_cleared() -> None:
    async with lmcache_pair(3) as pair:
        await pair.decoder.client.post("/admin/faults", json={"pd_buffer_held_chunks": 3})
        assert (await rank0(pair.decoder))["fault_held"] == 3
        prompt = await tokens(pair.decoder.client, TWO_CHUNKS, "blocked")
        await prefill(pair, prompt, "blocked")

        async def waiting() -> bool:
            return bool((await rank0(pair.decoder))["waiting_allocations"] == 1)

        await eventually(waiting)
        await pair.decoder.client.post("/admin/faults", json={})
        assert await notification(pair.pull) == {"type": "ProxyNotif", "req_id": "blocked"}
        assert (await rank0(pair.decoder))["fault_held"] == 0


async def test_an_engine_without_a_pd_receive_buffer_answers_404_on_its_admin_state() -> None:
    async with sim_client(SimSettings()) as client:
        response = await client.get("/admin/pd_buffer")
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "NotFoundError"
