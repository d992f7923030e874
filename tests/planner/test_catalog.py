"""The planner's catalogs: names resolve as pools spell them, shapes agree with published parameter
counts, and models also come from a config.json or a pool's architecture override."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tandem.api import ModelArchitecture
from tandem.planner import (
    ModelConfigError,
    PlannerError,
    UnknownGpuError,
    UnknownModelError,
    load_catalog,
    shape_from_architecture,
    shape_from_hf_config,
)
from tandem.planner.model import estimate_params

CATALOG = load_catalog()

# Excerpt of meta-llama/Llama-3.1-8B-Instruct config.json (the fields the planner reads).
LLAMA_8B_CONFIG = {
    "_name_or_path": "meta-llama/Llama-3.1-8B-Instruct",
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "max_position_embeddings": 131072,
}
# Excerpt of deepseek-ai/DeepSeek-V3 config.json.
DEEPSEEK_V3_CONFIG = {
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "num_hidden_layers": 61,
    "first_k_dense_replace": 3,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_experts_per_tok": 8,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "vocab_size": 129280,
    "tie_word_embeddings": False,
    "quantization_config": {"quant_method": "fp8"},
}


@pytest.mark.parametrize(
    "name",
    [
        "meta-llama/Llama-3.1-8B",
        "meta-llama/Llama-3.1-8B-Instruct",
        "META-LLAMA/llama-3.1-8b-instruct",
        "Llama-3.1-8B-Instruct",
        "meta-llama/Meta-Llama-3.1-8B-Instruct",
    ],
)
def test_model_names_resolve_case_insensitively_with_aliases(name: str) -> None:
    assert CATALOG.model(name).name == "meta-llama/Llama-3.1-8B"


def test_gpu_names_resolve_through_aliases() -> None:
    assert CATALOG.gpu("h100").name == "H100-80GB"
    assert CATALOG.gpu("NVIDIA-A100-SXM4-80GB").name == "A100-80GB"


def test_unknown_model_is_a_planner_error_naming_close_matches() -> None:
    with pytest.raises(UnknownModelError, match=r"Llama-3\.1-8B") as caught:
        CATALOG.model("meta-llama/Llama-3.1-8X")
    assert isinstance(caught.value, PlannerError)


def test_unknown_gpu_is_a_planner_error_listing_known_types() -> None:
    with pytest.raises(UnknownGpuError, match="H100-80GB"):
        CATALOG.gpu("B300")


def test_catalog_holds_the_required_models_and_gpus() -> None:
    for model in (
        "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.1-405B", "Qwen/Qwen2.5-7B",
        "Qwen/Qwen2.5-32B", "Qwen/Qwen2.5-72B", "mistralai/Mistral-7B-v0.3", "mistralai/Mixtral-8x7B-v0.1",
        "deepseek-ai/DeepSeek-V3", "deepseek-ai/DeepSeek-R1", "openai/gpt-oss-120b", "openai/gpt-oss-20b",
        "Qwen/Qwen3-235B-A22B", "Qwen/Qwen3-30B-A3B", "meta-llama/Llama-4-Scout-17B-16E",
        "facebook/opt-13b", "facebook/opt-66b",
    ):  # fmt: skip
        assert CATALOG.model(model).source.startswith("https://huggingface.co/")
    for gpu in ("H100-80GB", "H200-141GB", "A100-80GB", "A100-40GB", "L40S", "L4", "A10G"):
        spec = CATALOG.gpu(gpu)
        assert {"compute_memory", "price"} <= set(spec.sources), gpu
        assert spec.price_per_hour_usd > 0


@pytest.mark.parametrize("name", list(CATALOG.models))
def test_catalog_shapes_imply_the_published_parameter_counts(name: str) -> None:
    model = CATALOG.model(name)
    total, active = estimate_params(model)
    assert total / 1e9 == pytest.approx(model.total_params_b, rel=0.03)
    # Published active counts differ in whether they include the input embedding, a lookup and no
    # matmul (gpt-oss leaves it out; Llama counts it): compare both ways, one must hold.
    assert any(
        count / 1e9 == pytest.approx(model.active_params_b, rel=0.15)
        for count in (active, active - model.embedding_params)
    )


def test_moe_and_mla_are_described() -> None:
    deepseek = CATALOG.model("deepseek-v3")
    assert deepseek.is_moe and deepseek.is_mla and deepseek.weight_dtype == "fp8"
    gpt_oss = CATALOG.model("openai/gpt-oss-120b")
    assert gpt_oss.expert_weight_dtype == "mxfp4"
    # MXFP4 experts put the 117B-parameter checkpoint near its published 60.8 GiB.
    assert gpt_oss.weight_bytes() / 2**30 == pytest.approx(60.8, rel=0.05)


def test_hf_config_dict_gives_the_catalog_shape() -> None:
    shape = shape_from_hf_config(LLAMA_8B_CONFIG)
    catalog = CATALOG.model("meta-llama/Llama-3.1-8B")
    assert shape.kv_bytes_per_token() == catalog.kv_bytes_per_token()
    assert shape.total_params_b == pytest.approx(catalog.total_params_b, rel=0.01)
    assert shape.name == "meta-llama/Llama-3.1-8B-Instruct"


def test_hf_config_reads_moe_mla_and_fp8(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(DEEPSEEK_V3_CONFIG))
    shape = shape_from_hf_config(tmp_path, name="my-deepseek")
    assert shape.is_mla and shape.num_experts == 256 and shape.weight_dtype == "fp8"
    assert shape.total_params_b == pytest.approx(671, rel=0.01)
    assert shape.active_params_b == pytest.approx(37, rel=0.03)


def test_hf_config_missing_field_is_a_clear_error() -> None:
    broken = {k: v for k, v in LLAMA_8B_CONFIG.items() if k != "num_hidden_layers"}
    with pytest.raises(ModelConfigError, match="num_hidden_layers"):
        shape_from_hf_config(broken)


def test_hf_config_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelConfigError, match="cannot read"):
        shape_from_hf_config(tmp_path / "config.json")


def test_architecture_override_builds_a_shape() -> None:
    arch = ModelArchitecture(
        num_layers=40, hidden_size=5120, num_attention_heads=40, num_kv_heads=8,
        intermediate_size=13824, vocab_size=32000, total_params_b=13.0,
    )  # fmt: skip
    shape = shape_from_architecture("acme/custom-13b", arch)
    assert shape.head_dim == 128
    assert shape.active_params_b == 13.0
    assert shape.kv_bytes_per_token() == 2 * 40 * 8 * 128 * 2
