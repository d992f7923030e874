"""The vLLM NIXL handoff between real simulator processes: the prefill leg returns
kv_transfer_params, the decode leg pulls the KV from the prefiller's side channel, and the
prefiller's blocks stay held until then (in-process tests of the same: sim/test_nixl_*.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from protocol_facts import NIXL
from protocol_facts import NIXL_PREFILL_PARAMS as PREFILL_PARAMS

from tandem.sim.settings import SimSettings
from tandem.sim.testing import SimProcess, free_port, metric_value, sim_client, sim_process

pytestmark = pytest.mark.slow

CONFIG = json.dumps(NIXL)
MAX_TOKENS = 10


@dataclass
class Pair:
    prefiller: SimProcess
    decoder: SimProcess


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    def engine() -> contextlib.AbstractContextManager[SimProcess]:
        env = {"VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1", "VLLM_NIXL_SIDE_CHANNEL_PORT": str(free_port())}
        return sim_process(
            "--kv-transfer-config", CONFIG, "--kv-transfer-ms-per-token", "0.5", env=env, wait_s=None
        )

    with engine() as prefiller, engine() as decoder:
        prefiller.wait_healthy()
        decoder.wait_healthy()
        yield Pair(prefiller, decoder)


def complete(process: SimProcess, body: dict[str, Any], request_id: str) -> dict[str, Any]:
    response = httpx.post(
        f"{process.url}/v1/completions", json=body, headers={"X-Request-Id": request_id}, timeout=30
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def prefill(pair: Pair, body: dict[str, Any], request_id: str) -> dict[str, Any]:
    leg = {
        **body,
        "max_tokens": 1,
        "max_completion_tokens": 1,
        "stream": False,
        "kv_transfer_params": PREFILL_PARAMS,
    }
    return complete(pair.prefiller, leg, request_id)


def nixl(process: SimProcess, what: str) -> float:
    return metric_value(
        httpx.get(f"{process.url}/metrics").text, f"tandem_sim_kv_{what}_total", connector="nixl"
    )


def kv_usage(process: SimProcess) -> float:
    text = httpx.get(f"{process.url}/metrics").text
    return metric_value(text, "vllm:kv_cache_usage_perc", model_name="tandem/sim-model", engine="0")


def aggregated_answer(body: dict[str, Any]) -> str:
    async def ask() -> str:
        async with sim_client(SimSettings(speed=100)) as client:
            text: str = (await client.post("/v1/completions", json=body)).json()["choices"][0]["text"]
            return text

    return asyncio.run(ask())


def test_the_decode_leg_pulls_the_kv_and_answers_as_one_engine(pair: Pair) -> None:
    body = {"prompt": "Describe the NIXL transfer path in detail. " * 20, "max_tokens": MAX_TOKENS}
    hits = nixl(pair.decoder, "hits")
    prefilled = prefill(pair, body, "nixl-1")
    params = prefilled["kv_transfer_params"]
    assert params["do_remote_prefill"] is True and params["do_remote_decode"] is False
    assert params["remote_host"] == "127.0.0.1" and params["remote_request_id"].startswith("cmpl-nixl-1")
    assert params["tp_size"] == 1 and params["remote_block_ids"]
    assert kv_usage(pair.prefiller) > 0  # the blocks wait for the decoder
    decoded = complete(pair.decoder, {**body, "kv_transfer_params": params}, "nixl-1")
    assert decoded["choices"][0]["text"] == aggregated_answer(body)
    assert decoded["kv_transfer_params"] is None
    assert nixl(pair.decoder, "hits") == hits + 1
    assert nixl(pair.decoder, "bytes_received") > 0
    assert kv_usage(pair.prefiller) == 0


def test_reading_blocks_twice_gets_garbage_and_another_engine_fails_the_request(pair: Pair) -> None:
    """Read blocks are freed; vLLM 0.33 reads freed blocks anyway (pull_worker.py 668-681) and fails
    a load from an engine whose id does not match (base_worker.py 1229-1235, kv_load_failure_policy
    "fail")."""
    body = {"prompt": "Read me once. " * 10, "max_tokens": MAX_TOKENS}
    params = prefill(pair, body, "nixl-twice")["kv_transfer_params"]
    complete(pair.decoder, {**body, "kv_transfer_params": params}, "nixl-twice")
    stale = nixl(pair.decoder, "stale_reads")
    again = complete(pair.decoder, {**body, "kv_transfer_params": params}, "nixl-twice")
    assert again["choices"][0]["text"] != aggregated_answer(body)
    assert nixl(pair.decoder, "stale_reads") == stale + 1
    elsewhere = {**body, "kv_transfer_params": {**params, "remote_engine_id": "another-engine"}}
    response = httpx.post(f"{pair.decoder.url}/v1/completions", json=elsewhere, timeout=30)
    assert response.status_code == 500


def test_incomplete_remote_prefill_params_are_refused(pair: Pair) -> None:
    body = {"prompt": "Hi", "max_tokens": 2, "kv_transfer_params": {"do_remote_prefill": True}}
    response = httpx.post(f"{pair.decoder.url}/v1/completions", json=body)
    assert response.status_code == 400
    assert "kv_transfer_params" in response.json()["error"]["message"]
