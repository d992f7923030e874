"""A NIXL decode leg whose KV cannot be loaded (the prefiller is another engine, or does not answer)
fails the request under vLLM 0.33's default ``kv_load_failure_policy: fail``
(``config/kv_transfer.py`` 88; ``v1/core/sched/scheduler.py`` 2557-2567): ``finish_reason`` error,
which the OpenAI server turns into a 500 (``entrypoints/generate/base/serving.py`` 200-207) or, in a
stream, an error event before ``[DONE]`` (``entrypoints/openai/completion/serving.py`` 552-556).
With ``recompute`` the decoder computes the prompt itself."""

from __future__ import annotations

import json

from nixl_pair import aggregated, decode, metric, nixl_pair, prefill

from tandem.sim.testing import free_port

BODY = {"prompt": "Say something about the weather. " * 6, "max_tokens": 6}
INTERNAL = {"message": "Internal server error", "type": "InternalServerError", "param": None, "code": 500}


async def test_a_decode_leg_naming_another_engine_fails_with_500() -> None:
    async with nixl_pair() as pair:
        params = (await prefill(pair, BODY))["kv_transfer_params"]
        response = await decode(pair, BODY, {**params, "remote_engine_id": "another-engine"})
        assert response.status_code == 500 and response.json() == {"error": INTERNAL}
        assert await metric(pair.decoder, "tandem_sim_kv_misses_total", connector="nixl") == 1


async def test_a_streamed_decode_leg_whose_prefiller_is_gone_ends_with_an_error_event() -> None:
    async with nixl_pair() as pair:
        params = (await prefill(pair, BODY))["kv_transfer_params"]
        gone = {**params, "remote_port": free_port()}  # nothing answers there
        response = await decode(pair, {**BODY, "stream": True}, gone)
        assert response.status_code == 200
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]" and json.loads(events[-2]) == {"error": INTERNAL}


async def test_with_the_recompute_policy_a_failed_load_is_recomputed() -> None:
    async with nixl_pair(kv_load_failure_policy="recompute") as pair:
        params = (await prefill(pair, BODY))["kv_transfer_params"]
        response = await decode(pair, BODY, {**params, "remote_engine_id": "another-engine"})
        assert response.status_code == 200
        assert response.json()["choices"][0]["text"] == await aggregated(BODY)
