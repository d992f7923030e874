"""An in-process vLLM NIXL pair for simulator tests: a prefiller and a decoder app on the test's event
loop, the decoder pulling KV over the prefiller's real ZMQ side channel on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from protocol_facts import NIXL, NIXL_PREFILL_PARAMS

from tandem.api.timing import EngineTiming
from tandem.sim.settings import KVTransferConfig, NixlSettings, SimSettings
from tandem.sim.testing import free_port, metric_value, sim_client

LABELS = {"model_name": "tandem/sim-model", "engine": "0"}


@dataclass
class Pair:
    prefiller: httpx.AsyncClient
    decoder: httpx.AsyncClient


def nixl_settings(
    *, lease_s: int = 30, speed: float = 10.0, transfer_ms_per_token: float = 0.002, **config: Any
) -> SimSettings:
    extra = {"kv_lease_duration": lease_s}
    return SimSettings(
        speed=speed,
        timing=EngineTiming(kv_transfer_ms_per_token=transfer_ms_per_token),
        kv_transfer_config=KVTransferConfig.model_validate(
            {**NIXL, "kv_connector_extra_config": extra, **config}
        ),
        nixl=NixlSettings(side_channel_host="127.0.0.1", side_channel_port=free_port(), read_grace_s=2.0),
    )


@contextlib.asynccontextmanager
async def nixl_pair(**settings: Any) -> AsyncIterator[Pair]:
    """Two engines with the same ``nixl_settings(**settings)`` (each its own side channel)."""
    async with (
        sim_client(nixl_settings(**settings)) as prefiller,
        sim_client(nixl_settings(**settings)) as decoder,
    ):
        yield Pair(prefiller, decoder)


async def prefill(pair: Pair, body: dict[str, Any]) -> dict[str, Any]:
    leg = {**body, "max_tokens": 1, "max_completion_tokens": 1, "stream": False}
    response = await pair.prefiller.post(
        "/v1/completions", json={**leg, "kv_transfer_params": NIXL_PREFILL_PARAMS}
    )
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


async def decode(pair: Pair, body: dict[str, Any], params: dict[str, Any]) -> httpx.Response:
    return await pair.decoder.post("/v1/completions", json={**body, "kv_transfer_params": params})


async def aggregated(body: dict[str, Any]) -> str:
    async with sim_client(SimSettings(speed=100)) as client:
        text: str = (await client.post("/v1/completions", json=body)).json()["choices"][0]["text"]
        return text


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    return metric_value((await client.get("/metrics")).text, name, **labels)


async def kv_usage(client: httpx.AsyncClient) -> float:
    return await metric(client, "vllm:kv_cache_usage_perc", **LABELS)
