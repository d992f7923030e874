"""One KV-size formula (tandem.planner.kv_cache) for the planner and the router, checked against
LMCache's and vLLM's own rules, per attention kind and dtype; and the router sizing decoders' PD
buffers and awaiting notifications by it, for catalog models and spec.model.architecture alike."""

from __future__ import annotations

from typing import Any

import pytest
from operator_cases import engine_container, example_spec, layout, render

from tandem.api import InferencePoolSpec
from tandem.planner import pool_model
from tandem.planner.kv_cache import lmcache_chunk_bytes, pd_buffer_chunks
from tandem.router.pool import pool_config_from_resource

CHUNK = 256
BUFFER = 2 * 1024**3  # the decoders' default pd_buffer_size


def chunk_bytes_as_lmcache_computes(
    *, layers: int, kv_heads: int, head_size: int, tp: int, mla: bool, element_bytes: int
) -> int:
    """LMCache 0.5.6 `integration/vllm/vllm_service_factory.py`: kv_shape = (num_layer, 1 if use_mla
    else 2, chunk_size, num_kv_head, head_size) with vLLM's `get_num_kv_heads` (`config/model.py`: 1
    for MLA, else max(1, total // tp)) and `get_head_size` (MLA: kv_lora_rank + qk_rope_head_dim);
    `v1/storage_backend/pd_backend.py` sizes a chunk as that shape's elements times the KV dtype's
    size, which for `--kv-cache-dtype auto` is the model dtype (`utils/torch_utils.py`
    `get_kv_cache_torch_dtype`): bfloat16, FP8 weights included."""
    heads = 1 if mla else max(1, kv_heads // tp)
    return layers * (1 if mla else 2) * CHUNK * heads * head_size * element_bytes


MLA_ARCHITECTURE = {
    "numLayers": 27,
    "hiddenSize": 2048,
    "numAttentionHeads": 16,
    "numKvHeads": 16,
    "intermediateSize": 10944,
    "vocabSize": 102400,
    "totalParamsB": 15.7,
    "attention": "mla",
    "kvLoraRank": 512,
    "qkRopeHeadDim": 64,
}
GQA_ARCHITECTURE = {
    "numLayers": 40,
    "hiddenSize": 5120,
    "numAttentionHeads": 40,
    "numKvHeads": 8,
    "intermediateSize": 13824,
    "vocabSize": 32000,
    "totalParamsB": 13,
}

# (model section of the spec, decode TP, what LMCache's formula needs)
CASES: dict[str, tuple[dict[str, Any], int, dict[str, Any]]] = {
    "gqa-bf16-catalog": (
        {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        2,
        {"layers": 32, "kv_heads": 8, "head_size": 128, "mla": False, "element_bytes": 2},
    ),
    "gqa-fp8-weights-catalog": (
        {"name": "meta-llama/Llama-3.1-70B-Instruct", "dtype": "fp8"},
        4,
        {"layers": 80, "kv_heads": 8, "head_size": 128, "mla": False, "element_bytes": 2},
    ),
    "gqa-bf16-architecture": (
        {"name": "acme/custom-13b", "architecture": GQA_ARCHITECTURE},
        2,
        {"layers": 40, "kv_heads": 8, "head_size": 128, "mla": False, "element_bytes": 2},
    ),
    "mla-fp8-checkpoint-catalog": (
        {"name": "deepseek-ai/DeepSeek-V3"},
        8,
        {"layers": 61, "kv_heads": 128, "head_size": 512 + 64, "mla": True, "element_bytes": 2},
    ),
    "mla-bf16-architecture": (
        {"name": "acme/small-mla", "architecture": MLA_ARCHITECTURE},
        2,
        {"layers": 27, "kv_heads": 16, "head_size": 512 + 64, "mla": True, "element_bytes": 2},
    ),
    "mla-fp8-weights-architecture": (
        {"name": "acme/small-mla", "dtype": "fp8", "architecture": MLA_ARCHITECTURE},
        2,
        {"layers": 27, "kv_heads": 16, "head_size": 512 + 64, "mla": True, "element_bytes": 2},
    ),
}


def pool_object(model: dict[str, Any], decode_tp: int) -> dict[str, Any]:
    return {
        "apiVersion": "tandem.dev/v1alpha1",
        "kind": "InferencePool",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "model": model,
            "accelerator": {"type": "H100-80GB"},
            "decode": {"tensorParallel": decode_tp},
            "prefill": {"tensorParallel": decode_tp},
        },
    }


def spec_of(model: dict[str, Any], decode_tp: int) -> InferencePoolSpec:
    return InferencePoolSpec.model_validate(pool_object(model, decode_tp)["spec"])


@pytest.mark.parametrize("case", CASES)
def test_chunk_bytes_follow_lmcache_and_vllm(case: str) -> None:
    model, tp, facts = CASES[case]
    expected = chunk_bytes_as_lmcache_computes(tp=tp, **facts)
    assert lmcache_chunk_bytes(pool_model(spec_of(model, tp)), tp, CHUNK) == expected


@pytest.mark.parametrize("case", CASES)
def test_router_sizes_decoder_buffers_by_the_planners_formula(case: str) -> None:
    """Before: a catalog model (no spec.model.architecture) was not tracked at all, and an fp8 one
    got twice the chunks its decoders hold (the router's own copy took FP8 weights for an FP8 cache)."""
    model, tp, facts = CASES[case]
    config = pool_config_from_resource(pool_object(model, tp), default_threshold=1024, prefill_saturation=8)
    assert config.decoder_buffer_chunks == BUFFER // chunk_bytes_as_lmcache_computes(tp=tp, **facts)
    assert config.decoder_buffer_chunks == pd_buffer_chunks(pool_model(spec_of(model, tp)), tp, CHUNK, BUFFER)


@pytest.mark.parametrize("case", CASES)
def test_one_notification_for_mla_one_per_rank_otherwise(case: str) -> None:
    """LMCache stores MLA KV from the first rank only (`save_only_first_rank` defaults to `use_mla`,
    v1/cache_engine.py), so one ProxyNotif comes whatever the TP; GQA/MHA: one per rank."""
    model, tp, facts = CASES[case]
    config = pool_config_from_resource(pool_object(model, tp), default_threshold=1024, prefill_saturation=8)
    assert config.kv_notifications == (1 if facts["mla"] else tp)
    assert config.decode_tp == tp  # still one receiver port pair per rank


def test_an_fp8_cache_halves_the_chunk() -> None:
    """`--kv-cache-dtype fp8` stores one byte per element (vLLM STR_DTYPE_TO_TORCH_DTYPE["fp8"])."""
    model = pool_model(spec_of({"name": "meta-llama/Llama-3.1-8B-Instruct"}, 1))
    fp8 = model.model_copy(update={"kv_cache_dtype": "fp8"})
    assert lmcache_chunk_bytes(fp8, 1, CHUNK) * 2 == lmcache_chunk_bytes(model, 1, CHUNK)


def test_fp8_pools_run_fp8_weights_with_an_auto_cache() -> None:
    """What the `auto` rule above rests on: the operator quantizes the weights and leaves
    --kv-cache-dtype at vLLM's default."""
    spec = example_spec("llama-3.1-8b-h100.yaml", model={"dtype": "fp8"})
    args = engine_container(render(spec, layout(spec)), "llama", "decode")["args"]
    assert "--quantization" in args and not any(a.startswith("--kv-cache-dtype") for a in args)
