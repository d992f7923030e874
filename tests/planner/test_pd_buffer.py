"""The decoders' LMCache PD buffer as the planner sizes it (planner/pd_buffer.py)."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import pytest

from tandem.api import InferencePoolSpec, TokenStats
from tandem.planner import Plan, plan_pool
from tandem.planner.catalog import load_catalog
from tandem.planner.kv_cache import kv_bytes_per_token_all_ranks, pd_buffer_chunks
from tandem.planner.lengths import LengthDistribution
from tandem.planner.pd_buffer import GIB, IN_FLIGHT_LEVEL, PD_BUFFER_STEP_BYTES, buffer_need, most_bytes
from tandem.planner.planner import pool_model

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"


def rag(rps: float = 8, p90: int = 6000, **overrides: Any) -> InferencePoolSpec:
    """The twin's rag-8b workload (sim/twin.py), disaggregated with LMCache."""
    spec: dict[str, Any] = {
        "model": {"name": LLAMA_8B},
        "accelerator": {"type": "H100-80GB"},
        "slo": {"ttftMs": 1000, "itlMs": 40},
        "workload": {
            "requestsPerSecond": rps,
            "promptTokens": {"mean": 4000, "p90": p90},
            "outputTokens": {"mean": 200},
        },
        "disaggregation": {"mode": "Always"},
    }
    for key, value in overrides.items():
        spec[key] = {**spec.get(key, {}), **value}
    return InferencePoolSpec.model_validate(spec)


def pinned(buffer_bytes: int, **overrides: Any) -> InferencePoolSpec:
    lmcache = {"kvTransfer": {"lmcache": {"decoderBufferBytes": buffer_bytes}}}
    return rag(disaggregation={"mode": "Always", **lmcache}, **overrides)


def buffer_of(planned: Plan) -> int:
    assert planned.feasible, planned.reason
    assert planned.decode is not None and planned.decode.pd_buffer_bytes is not None
    return planned.decode.pd_buffer_bytes


def test_the_buffer_grows_with_the_rate_and_the_prompt() -> None:
    base = buffer_of(plan_pool(rag(rps=4)))
    assert buffer_of(plan_pool(rag(rps=8))) > base
    assert buffer_of(plan_pool(rag(rps=4, p90=8000))) > base
    assert base % PD_BUFFER_STEP_BYTES == 0


def test_the_need_is_littles_law_with_the_prompts_spread() -> None:
    """Chunks in flight: a compound Poisson sum of n = rate x hold handoffs over the prompt lengths,
    taken at IN_FLIGHT_LEVEL, plus an arriving p90 prompt's chunks."""
    model = pool_model(rag())
    prompts = LengthDistribution.from_stats(TokenStats(mean=4000, p90=6000))
    fixed = LengthDistribution.from_stats(TokenStats(mean=4000))
    z = NormalDist().inv_cdf(IN_FLIGHT_LEVEL)
    for rate_per_s, hold_ms in ((2, 300), (8, 450), (30, 1200)):
        n = rate_per_s * hold_ms / 1000
        need = buffer_need(model, 1, 256, fixed, rate_per_s / 1000, hold_ms, 90)
        assert need.in_flight_chunks == math.ceil(n * 16 + z * math.sqrt(n * 16 * 16))
        assert need.handoff_chunks == 16
        spread = buffer_need(model, 1, 256, prompts, rate_per_s / 1000, hold_ms, 90)
        assert spread.in_flight_chunks > need.in_flight_chunks  # the long prompts' tail
        assert spread.handoff_chunks == math.ceil(6000 / 256)
        assert spread.exact_bytes == (spread.in_flight_chunks + 24) * 32 * 1024**2  # 32 MiB chunks


def test_the_buffer_is_the_simulators_and_routers_chunks() -> None:
    """The planned size counts the same chunks in the simulator's receiver (sim/lmcache_receiver.py:
    pd_buffer_size // (chunk_size x --kv-bytes-per-token / world size)) and the router's admission
    (planner/kv_cache.py)."""
    spec = rag()
    model = pool_model(spec)
    size = buffer_of(plan_pool(spec))
    sim_chunks = size // (256 * kv_bytes_per_token_all_ranks(model, 1, 1))
    assert sim_chunks == pd_buffer_chunks(model, 1, 256, size) == size // (32 * 1024**2)


def test_the_buffer_sits_outside_vllms_budget_and_leaves_the_kv_cache_alone() -> None:
    """LMCache allocates it after vLLM sized its KV cache (planner/pd_buffer.py cites where): the
    planned KV capacity does not move with it, and it stays within what vLLM leaves over."""
    planned = plan_pool(rag(rps=8))
    small = plan_pool(pinned(1 * GIB, workload={"requestsPerSecond": 0.5}))
    assert planned.decode is not None and small.decode is not None
    assert planned.decode.kv_capacity_tokens == small.decode.kv_capacity_tokens
    h100 = load_catalog().gpu("H100-80GB")
    assert buffer_of(planned) <= most_bytes(h100, planned.decode.gpu_memory_utilization)
    assert most_bytes(h100, 0.8) > most_bytes(h100, 0.92)


def test_more_decoders_where_one_buffer_cannot_take_the_rate() -> None:
    one = plan_pool(rag(rps=8))
    busy = plan_pool(rag(rps=30))
    assert one.decode is not None and busy.decode is not None
    h100 = load_catalog().gpu("H100-80GB")
    assert buffer_of(busy) <= most_bytes(h100, busy.decode.gpu_memory_utilization)
    assert busy.decode.replicas > one.decode.replicas


def test_a_pinned_buffer_wins() -> None:
    assert buffer_of(plan_pool(pinned(4 * GIB))) == 4 * GIB


def test_a_pinned_buffer_too_small_for_the_rate_adds_decoders() -> None:
    planned = plan_pool(rag())
    tight = plan_pool(pinned(2 * GIB))
    assert planned.decode is not None and tight.decode is not None
    assert tight.decode.replicas > planned.decode.replicas
    assert buffer_of(tight) == 2 * GIB


def test_a_pinned_buffer_too_small_for_the_rate_with_pinned_decoders_is_infeasible() -> None:
    planned = plan_pool(pinned(2 * GIB, decode={"replicas": 1}))
    assert not planned.feasible
    assert (
        planned.reason is not None
        and "pinned decoderBufferBytes 2147483648 limits the rate" in planned.reason
    )


@pytest.mark.parametrize("buffer_bytes", [100 * 1024**2, 700 * 1024**2])
def test_a_pinned_buffer_too_small_for_one_p90_prompt_is_infeasible(buffer_bytes: int) -> None:
    planned = plan_pool(pinned(buffer_bytes))
    assert not planned.feasible
    assert planned.reason is not None
    assert f"pinned decoderBufferBytes {buffer_bytes} holds no p90 prompt's KV" in planned.reason


def test_the_plan_status_publishes_the_buffer() -> None:
    planned = plan_pool(rag())
    status = planned.to_status()
    assert status.decode is not None and status.decode.pd_buffer_bytes == buffer_of(planned)
    assert status.prefill is not None and status.prefill.pd_buffer_bytes is None


def test_no_buffer_without_lmcache_handoffs() -> None:
    nixl = rag(disaggregation={"mode": "Always", "kvTransfer": {"connector": "nixl"}})
    never = rag(disaggregation={"mode": "Never"})
    for spec in (nixl, never):
        decode = plan_pool(spec).decode
        assert decode is not None and decode.pd_buffer_bytes is None
