"""The NIXL prefill leg's answer, as vLLM 0.33's ``request_finished`` builds it
(``distributed/kv_transfer/kv_connector/v1/nixl/pull_scheduler.py`` 191-293): kv_transfer_params
with every field when the prefill stopped on the length cap **or** on a stop (EOS, a stop string),
``remote_block_ids`` one list per KV-cache group, and the blocks held in both cases."""

from __future__ import annotations

from typing import Any

import pytest
from nixl_pair import aggregated, decode, kv_usage, nixl_pair, prefill
from protocol_facts import NIXL_PREFILL_RESPONSE_FIELDS

BLOCK = 16  # the simulator's default --block-size


@pytest.mark.parametrize(
    ("body", "finish_reason"),
    [
        ({"prompt": "Tell me a long story about the sea. " * 5, "max_tokens": 20}, "length"),
        ({"prompt": "Nothing more to say.</s>", "max_tokens": 20}, "stop"),  # EOS first
    ],
    ids=["length", "eos"],
)
async def test_a_prefill_answers_every_field_and_holds_its_blocks(
    body: dict[str, Any], finish_reason: str
) -> None:
    async with nixl_pair() as pair:
        tokens = len(
            (await pair.prefiller.post("/tokenize", json={"prompt": body["prompt"]})).json()["tokens"]
        )
        answer = await prefill(pair, body)
        assert answer["choices"][0]["finish_reason"] == finish_reason
        params = answer["kv_transfer_params"]
        assert set(params) == NIXL_PREFILL_RESPONSE_FIELDS
        assert (params["do_remote_prefill"], params["do_remote_decode"]) == (True, False)
        assert (params["tp_size"], params["dcp_size"], params["pp_size"]) == (1, 1, 1)
        assert params["remote_num_tokens"] == tokens
        assert (params["remote_blocks_expiry_time"], params["remote_registration_generation"]) == (None, 0)
        assert params["transfer_mode"] == "pull"
        groups = params["remote_block_ids"]
        assert len(groups) == 1 and len(groups[0]) == -(-tokens // BLOCK)  # one full-attention group
        assert await kv_usage(pair.prefiller) > 0  # held for a decoder, EOS or not


async def test_a_stop_string_on_the_first_token_also_returns_params() -> None:
    body: dict[str, Any] = {"prompt": "Stop right away", "max_tokens": 10}
    first_word = (await aggregated({**body, "max_tokens": 1})).strip()
    async with nixl_pair() as pair:
        answer = await prefill(pair, {**body, "stop": [first_word]})
        assert answer["choices"][0]["finish_reason"] == "stop"
        assert set(answer["kv_transfer_params"]) == NIXL_PREFILL_RESPONSE_FIELDS


async def test_the_decode_leg_reads_the_held_blocks_and_answers_as_one_engine() -> None:
    body = {"prompt": "Explain KV caches to a child. " * 8, "max_tokens": 12}
    async with nixl_pair() as pair:
        params = (await prefill(pair, body))["kv_transfer_params"]
        decoded = await decode(pair, body, params)
        assert decoded.json()["choices"][0]["text"] == await aggregated(body)
        assert await kv_usage(pair.prefiller) == 0  # read, so released


async def test_a_flat_block_id_list_is_refused() -> None:
    async with nixl_pair() as pair:
        params = (await prefill(pair, {"prompt": "Hi there", "max_tokens": 4}))["kv_transfer_params"]
        flat = {**params, "remote_block_ids": params["remote_block_ids"][0]}
        response = await decode(pair, {"prompt": "Hi there", "max_tokens": 4}, flat)
        assert response.status_code == 400
        assert "remote_block_ids" in response.json()["error"]["message"]
