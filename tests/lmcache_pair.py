"""An in-process LMCache PD pair for simulator tests: a prefiller and a decoder app on the test's
event loop, their handoff over real ZMQ sockets on loopback, and the proxy's PULL socket, driven as
a proxy drives them (tokenize, prefill with a disagg_spec, wait for notifications, decode)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import zmq
import zmq.asyncio
from protocol_facts import LMCACHE_CONSUMER, LMCACHE_PRODUCER

from tandem.sim.settings import KVTransferConfig, LMCacheConfig, SimSettings
from tandem.sim.testing import free_port, metric_value, sim_client

CHUNK = 256
KV_BYTES_PER_TOKEN = 131072  # the simulator's default (all ranks)
SPEED = 20.0


def chunk_bytes(tp: int) -> int:
    return CHUNK * KV_BYTES_PER_TOKEN // tp


@dataclass
class Decoder:
    client: httpx.AsyncClient
    init_ports: list[int]
    alloc_ports: list[int]

    def spec(self, req_id: str) -> dict[str, Any]:
        return {
            "req_id": req_id,
            "receiver_host": "127.0.0.1",
            "receiver_init_port": self.init_ports,
            "receiver_alloc_port": self.alloc_ports,
        }

    async def buffer(self) -> dict[str, Any]:
        response = await self.client.get("/admin/pd_buffer")
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state


@dataclass
class Pair:
    prefiller: httpx.AsyncClient
    decoder: Decoder
    pull: zmq.asyncio.Socket


def _kv_config(facts: dict[str, Any], discard_partial: bool) -> KVTransferConfig:
    config = KVTransferConfig.model_validate(facts)
    extra = {**config.kv_connector_extra_config, "discard_partial_chunks": discard_partial}
    return config.model_copy(update={"kv_connector_extra_config": extra})


@dataclass(frozen=True)
class Model:
    """What both ends of a pair share."""

    tp: int = 1
    use_mla: bool = False
    discard_partial: bool = False
    extra_config: dict[str, Any] | None = None


def _settings(model: Model, facts: dict[str, Any], lmcache: LMCacheConfig, **more: Any) -> SimSettings:
    lmcache_keys = {k: more.pop(k) for k in list(more) if k in LMCacheConfig.model_fields}
    return SimSettings(
        speed=SPEED,
        tensor_parallel_size=model.tp,
        use_mla=model.use_mla,
        kv_transfer_config=_kv_config(facts, model.discard_partial),
        lmcache=lmcache.model_copy(update={"extra_config": model.extra_config, **lmcache_keys}),
        lmcache_hash_seed=0,
        **more,
    )


@contextlib.asynccontextmanager
async def proxy_socket() -> AsyncIterator[tuple[zmq.asyncio.Socket, int]]:
    """The proxy's PULL socket (bound to a free port) and its port."""
    context = zmq.asyncio.Context()
    pull = context.socket(zmq.PULL)
    try:
        yield pull, pull.bind_to_random_port("tcp://127.0.0.1")
    finally:
        pull.close(linger=0)
        context.term()


@contextlib.asynccontextmanager
async def prefiller_running(
    proxy_port: int, model: Model = Model(), **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    sender = LMCacheConfig(
        enable_pd=True,
        transfer_channel="nixl",
        pd_role="sender",
        pd_proxy_host="127.0.0.1",
        pd_proxy_port=proxy_port,
        pd_buffer_size=1 << 30,
    )
    async with sim_client(_settings(model, LMCACHE_PRODUCER, sender, **settings)) as client:
        yield client


@contextlib.asynccontextmanager
async def decoder_running(
    buffer_chunks: int,
    model: Model = Model(),
    *,
    ports: tuple[list[int], list[int]] | None = None,
    **settings: Any,
) -> AsyncIterator[Decoder]:
    """A decoder of ``buffer_chunks`` chunks per rank; ``settings``: SimSettings or LMCache keys."""
    init, alloc = ports or ([free_port() for _ in range(model.tp)], [free_port() for _ in range(model.tp)])
    receiver = LMCacheConfig(
        enable_pd=True,
        transfer_channel="nixl",
        pd_role="receiver",
        pd_peer_host="127.0.0.1",
        pd_peer_init_port=init,
        pd_peer_alloc_port=alloc,
        pd_buffer_size=buffer_chunks * chunk_bytes(model.tp),
    )
    async with sim_client(_settings(model, LMCACHE_CONSUMER, receiver, **settings)) as client:
        yield Decoder(client, init, alloc)


@contextlib.asynccontextmanager
async def lmcache_pair(buffer_chunks: int, model: Model = Model(), **decoder: Any) -> AsyncIterator[Pair]:
    """A prefiller and a decoder of ``buffer_chunks`` chunks per rank; ``decoder``: its settings."""
    async with (
        proxy_socket() as (pull, proxy_port),
        decoder_running(buffer_chunks, model, **decoder) as receiver,
        prefiller_running(proxy_port, model) as prefiller,
    ):
        yield Pair(prefiller, receiver, pull)


async def tokens(client: httpx.AsyncClient, count: int, salt: str) -> list[int]:
    """A prompt of exactly ``count`` token ids, distinct per ``salt`` from its first chunk on."""
    text = f"{salt}: " + " ".join(f"w{i % 97}" for i in range(count))
    ids: list[int] = (await client.post("/tokenize", json={"prompt": text})).json()["tokens"]
    return ids[:count]


async def prefill(pair: Pair, prompt: list[int], req_id: str) -> dict[str, Any]:
    body = {
        "prompt": prompt,
        "max_tokens": 1,
        "stream": False,
        "kv_transfer_params": {"ret_first_tok": True, "disagg_spec": pair.decoder.spec(req_id)},
    }
    response = await pair.prefiller.post("/v1/completions", json=body)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


async def decode(decoder: Decoder, prompt: list[int], first_tok: int, max_tokens: int = 4) -> str:
    body = {"prompt": [*prompt, first_tok], "max_tokens": max_tokens}
    response = await decoder.client.post("/v1/completions", json=body)
    response.raise_for_status()
    text: str = response.json()["choices"][0]["text"]
    return text


async def next_message(pull: zmq.asyncio.Socket, wait_s: float = 15.0) -> list[bytes]:
    frames: list[bytes] = await asyncio.wait_for(pull.recv_multipart(), wait_s)
    return frames


async def notification(pull: zmq.asyncio.Socket, wait_s: float = 15.0) -> dict[str, Any]:
    frames = await next_message(pull, wait_s)
    assert len(frames) == 1, frames
    message: dict[str, Any] = msgspec.msgpack.decode(frames[0])
    return message


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    return metric_value((await client.get("/metrics")).text, name, **labels)
