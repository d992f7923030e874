"""The LMCache prefiller's end, as LMCache 0.5.6's async PD backend
(``lmcache/v1/storage_backend/pd_backend_async.py``) behaves: the first contact with a decoder
blocks the forward pass without a timeout, and a rank notifies only once it has sent the
``total_chunks`` it declared."""

from __future__ import annotations

import asyncio

from lmcache_pair import (
    Model,
    decoder_running,
    lmcache_pair,
    metric,
    notification,
    prefiller_running,
    proxy_socket,
    tokens,
)

from tandem.sim.testing import eventually, free_port

LABELS = {"model_name": "tandem/sim-model", "engine": "0"}


async def test_a_first_contact_with_an_absent_decoder_stalls_the_whole_prefiller() -> None:
    """_ensure_peer_connection (691-731) waits for the handshake with future.result(), no timeout,
    inside the forward pass: every request on the prefiller waits with it."""
    ports = ([free_port()], [free_port()])  # nothing listens there yet
    async with proxy_socket() as (pull, proxy_port), prefiller_running(proxy_port) as prefiller:
        spec = {
            "req_id": "stalled",
            "receiver_host": "127.0.0.1",
            "receiver_init_port": ports[0],
            "receiver_alloc_port": ports[1],
        }
        body = {"prompt": "Hello there", "max_tokens": 1, "kv_transfer_params": {"disagg_spec": spec}}
        handoff = asyncio.create_task(prefiller.post("/v1/completions", json=body))

        async def prefilled() -> bool:
            return await metric(prefiller, "vllm:prompt_tokens_total", **LABELS) > 0

        await eventually(prefilled)
        plain = asyncio.create_task(prefiller.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}))
        done, _ = await asyncio.wait([handoff, plain], timeout=0.5)
        assert not done  # the engine is stuck in the handshake
        async with decoder_running(4, ports=ports):
            answers = await asyncio.wait_for(asyncio.gather(handoff, plain), 15)
            assert [answer.status_code for answer in answers] == [200, 200]
            assert await notification(pull) == {"type": "ProxyNotif", "req_id": "stalled"}


async def test_with_discarded_partial_chunks_a_ragged_prompt_is_never_notified() -> None:
    """total_chunks is ceil(prompt / 256) (vllm_v1_adapter.py 413-417) but only whole chunks are
    stored, so _check_and_send_proxy_notif (1003-1027) never sees them all."""
    async with lmcache_pair(4, Model(discard_partial=True)) as pair:
        whole = await tokens(pair.decoder.client, 512, "whole")
        ragged = await tokens(pair.decoder.client, 300, "ragged")
        for prompt, req_id in ((ragged, "ragged"), (whole, "whole")):
            body = {
                "prompt": prompt,
                "max_tokens": 1,
                "kv_transfer_params": {"ret_first_tok": True, "disagg_spec": pair.decoder.spec(req_id)},
            }
            assert (await pair.prefiller.post("/v1/completions", json=body)).status_code == 200

        async def all_written() -> bool:
            return bool((await pair.decoder.buffer())["ranks"][0]["ready"] == 3)

        await eventually(all_written)  # the ragged prompt's whole chunk arrived, and both of whole's
        assert await notification(pair.pull) == {"type": "ProxyNotif", "req_id": "whole"}
        assert await pair.pull.poll(0) == 0
