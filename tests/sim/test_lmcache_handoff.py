"""The LMCache PD handoff between real simulator processes, driven by hand as a proxy would:
tokenize, prefill with a disagg_spec, wait for one ProxyNotif per TP rank on a ZMQ PULL, decode
with the prompt plus the first token. Pairing mistakes show in the decoders' counters."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import zmq
from protocol_facts import LMCACHE_CONSUMER as CONSUMER
from protocol_facts import LMCACHE_PRODUCER as PRODUCER

from tandem.sim.settings import SimSettings
from tandem.sim.testing import SimProcess, free_port, metric_value, sim_client, sim_process

pytestmark = pytest.mark.slow

TP = 2
CHUNK_BYTES_PER_RANK = 256 * 131072 // TP  # LMCache chunk of 256 tokens, default KV bytes per token
PROMPT = "Explain how prefill and decode can run on different GPUs. " * 30  # ~330 tokens: two chunks
MAX_TOKENS = 12


@dataclass
class Decoder:
    process: SimProcess
    init_ports: list[int]
    alloc_ports: list[int]


@dataclass
class Pool:
    prefiller: SimProcess
    decoder: Decoder
    small_decoder: Decoder  # PD buffer of one chunk per rank
    notifications: zmq.Socket  # type: ignore[type-arg]


def _decoder(tmp: Path, name: str, buffer_size: int, stack: contextlib.ExitStack) -> Decoder:
    init, alloc = [free_port() for _ in range(TP)], [free_port() for _ in range(TP)]
    config = tmp / f"{name}.yaml"
    config.write_text(
        "enable_pd: true\ntransfer_channel: nixl\npd_role: receiver\npd_peer_host: 127.0.0.1\n"
        f"pd_peer_init_port: {init}\npd_peer_alloc_port: {alloc}\npd_buffer_size: {buffer_size}\n"
        "pd_buffer_device: cuda\nnixl_backends: [UCX]\nlocal_cpu: false\n"
    )
    env = {"LMCACHE_CONFIG_FILE": str(config), "PYTHONHASHSEED": "0"}
    args = ("--kv-transfer-config", json.dumps(CONSUMER), "--tensor-parallel-size", str(TP))
    return Decoder(stack.enter_context(sim_process(*args, env=env, wait_s=None)), init, alloc)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    tmp = tmp_path_factory.mktemp("lmcache")
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    proxy_port = pull.bind_to_random_port("tcp://127.0.0.1")
    config = tmp / "prefiller.yaml"
    config.write_text(
        "enable_pd: true\ntransfer_channel: nixl\npd_role: sender\npd_proxy_host: 127.0.0.1\n"
        f"pd_proxy_port: {proxy_port}\npd_buffer_size: 1073741824\npd_buffer_device: cuda\n"
    )
    with contextlib.ExitStack() as stack:
        stack.callback(context.destroy, linger=0)
        prefiller = stack.enter_context(
            sim_process(
                "--kv-transfer-config",
                json.dumps(PRODUCER),
                "--tensor-parallel-size",
                str(TP),
                "--kv-transfer-ms-per-token",
                "2",  # ~0.7 s in flight: long enough to read early
                env={"LMCACHE_CONFIG_FILE": str(config), "PYTHONHASHSEED": "0"},
                wait_s=None,
            )
        )
        pool = Pool(
            prefiller,
            _decoder(tmp, "decoder", 1 << 30, stack),
            _decoder(tmp, "small", CHUNK_BYTES_PER_RANK, stack),
            pull,
        )
        for process in (pool.prefiller, pool.decoder.process, pool.small_decoder.process):
            process.wait_healthy()
        yield pool


def prefill(
    pool: Pool, tokens: list[int], req_id: str, decoder: Decoder, tag: dict[str, str] | None = None
) -> dict[str, Any]:
    spec = {
        "req_id": req_id,
        "receiver_host": "127.0.0.1",
        "receiver_init_port": decoder.init_ports,
        "receiver_alloc_port": decoder.alloc_ports,
    }
    body = {
        "prompt": tokens,
        "max_tokens": 1,
        "stream": False,
        "kv_transfer_params": {"ret_first_tok": True, "disagg_spec": spec, **(tag or {})},
    }
    response = httpx.post(f"{pool.prefiller.url}/v1/completions", json=body, timeout=30)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def decode(decoder: Decoder, tokens: list[int], first_token: int, tag: dict[str, str] | None = None) -> str:
    """The decode leg, streamed as a proxy sends it."""
    rest = MAX_TOKENS - 1
    body: dict[str, Any] = {
        "prompt": [*tokens, first_token],
        "max_tokens": rest,
        "max_completion_tokens": rest,
        "stream": True,
    }
    if tag:
        body["kv_transfer_params"] = tag
    text = []
    with httpx.stream("POST", f"{decoder.process.url}/v1/completions", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                text.append(json.loads(line[6:])["choices"][0]["text"])
    return "".join(text)


def notifications(pool: Pool, count: int, timeout_ms: int) -> list[dict[str, Any]]:
    received = []
    for _ in range(count):
        if not pool.notifications.poll(timeout_ms):
            break
        received.append(msgspec.msgpack.decode(pool.notifications.recv()))
    return received


def counter(process: SimProcess, name: str, **labels: str) -> float:
    return metric_value(httpx.get(f"{process.url}/metrics").text, name, **labels)


def kv(process: SimProcess, what: str) -> float:
    return counter(process, f"tandem_sim_kv_{what}_total", connector="lmcache")


def tokenize(process: SimProcess, text: str) -> list[int]:
    tokens: list[int] = httpx.post(f"{process.url}/tokenize", json={"prompt": text}).json()["tokens"]
    return tokens


def aggregated_answer(tokens: list[int]) -> str:
    async def ask() -> str:
        async with sim_client(SimSettings(speed=100)) as client:
            body = {"prompt": tokens, "max_tokens": MAX_TOKENS}
            text: str = (await client.post("/v1/completions", json=body)).json()["choices"][0]["text"]
            return text

    return asyncio.run(ask())


def test_a_decode_after_the_notifications_hits_and_answers_as_one_engine(pool: Pool) -> None:
    tokens = tokenize(pool.decoder.process, PROMPT)
    hits, received = kv(pool.decoder.process, "hits"), kv(pool.decoder.process, "bytes_received")
    prefilled = prefill(pool, tokens, "hit-1", pool.decoder)
    assert notifications(pool, TP, 5000) == [{"type": "ProxyNotif", "req_id": "hit-1"}] * TP
    text = prefilled["choices"][0]["text"] + decode(
        pool.decoder, tokens, prefilled["kv_transfer_params"]["first_tok"]
    )
    assert text == aggregated_answer(tokens)
    assert kv(pool.decoder.process, "hits") == hits + 1
    assert kv(pool.decoder.process, "bytes_received") == received + len(tokens) * 131072


def test_a_decode_before_the_notifications_is_an_early_read_and_garbage(pool: Pool) -> None:
    tokens = tokenize(pool.decoder.process, PROMPT + " Early.")
    early = kv(pool.decoder.process, "early_reads")
    prefilled = prefill(pool, tokens, "early-1", pool.decoder)
    text = prefilled["choices"][0]["text"] + decode(
        pool.decoder, tokens, prefilled["kv_transfer_params"]["first_tok"]
    )
    assert kv(pool.decoder.process, "early_reads") == early + 1
    assert text != aggregated_answer(tokens)
    assert len(notifications(pool, TP, 5000)) == TP  # the transfer still completes


def test_a_decode_on_the_wrong_decoder_misses_and_recomputes(pool: Pool) -> None:
    tokens = tokenize(pool.decoder.process, PROMPT + " Wrong.")
    misses, hits = kv(pool.small_decoder.process, "misses"), kv(pool.small_decoder.process, "hits")
    prefilled = prefill(pool, tokens, "wrong-1", pool.decoder)
    assert len(notifications(pool, TP, 5000)) == TP
    first = prefilled["kv_transfer_params"]["first_tok"]
    assert prefilled["choices"][0]["text"] + decode(pool.small_decoder, tokens, first) == aggregated_answer(
        tokens
    )
    assert kv(pool.small_decoder.process, "misses") == misses + 1
    assert kv(pool.small_decoder.process, "hits") == hits


def test_a_full_pd_buffer_refuses_the_allocation_and_nothing_is_notified(pool: Pool) -> None:
    tokens = tokenize(pool.decoder.process, PROMPT + " Too big.")
    assert len(tokens) > 256  # two chunks; the small decoder holds one per rank
    failures = counter(pool.small_decoder.process, "tandem_sim_kv_alloc_failures_total")
    prefilled = prefill(pool, tokens, "full-1", pool.small_decoder)
    assert prefilled["kv_transfer_params"]["first_tok"] >= 0
    assert notifications(pool, 1, 1000) == []
    assert counter(pool.small_decoder.process, "tandem_sim_kv_alloc_failures_total") == failures + TP


def test_dropped_notifications_leave_the_kv_in_place(pool: Pool) -> None:
    admin = f"{pool.prefiller.url}/admin/faults"
    dropped = counter(pool.prefiller, "tandem_sim_proxy_notifications_total", outcome="dropped")
    tokens = tokenize(pool.decoder.process, PROMPT + " Dropped.")
    httpx.post(admin, json={"drop_notifications": True}).raise_for_status()
    try:
        prefilled = prefill(pool, tokens, "drop-1", pool.decoder)
        assert notifications(pool, 1, 1500) == []
    finally:
        httpx.post(admin, json={}).raise_for_status()
    assert counter(pool.prefiller, "tandem_sim_proxy_notifications_total", outcome="dropped") == dropped + TP
    hits = kv(pool.decoder.process, "hits")
    decode(pool.decoder, tokens, prefilled["kv_transfer_params"]["first_tok"])
    assert kv(pool.decoder.process, "hits") == hits + 1


def test_two_handoffs_in_flight_to_one_decoder_under_one_tag_read_each_others_chunks_early(
    pool: Pool,
) -> None:
    """Why the router leases a decoder's handoff tags (router/connectors/tag_lease.py): the second
    prefill's allocation finds the first's keys held (pinned, in already_sent_indexes), so its sender
    writes nothing and notifies at once, and its decode leg reads chunks still being written."""
    tokens = tokenize(pool.decoder.process, PROMPT + " Shared tag.")
    tag = {"lmcache.tag.tandem_handoff": "h0"}
    early = kv(pool.decoder.process, "early_reads")
    first = prefill(pool, tokens, "shared-1", pool.decoder, tag)
    second = prefill(pool, tokens, "shared-2", pool.decoder, tag)
    assert notifications(pool, TP, 5000) == [{"type": "ProxyNotif", "req_id": "shared-2"}] * TP
    decode(pool.decoder, tokens, second["kv_transfer_params"]["first_tok"], tag)
    assert kv(pool.decoder.process, "early_reads") == early + 1
    assert notifications(pool, TP, 5000) == [{"type": "ProxyNotif", "req_id": "shared-1"}] * TP
    hits = kv(pool.decoder.process, "hits")
    decode(pool.decoder, tokens, first["kv_transfer_params"]["first_tok"], tag)  # the chunks' last reference
    assert kv(pool.decoder.process, "hits") == hits + 1
