"""Model shapes from a Hugging Face config.json (a path or the parsed dict).

Parameter counts follow from the shape (`estimate_params`); the checkpoint dtype from `torch_dtype`
and `quantization_config`. Multimodal configs are read through their `text_config`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tandem.api.spec import AttentionKind
from tandem.planner.errors import ModelConfigError
from tandem.planner.model import ModelShape, WeightDtype, estimate_params

# Architectures whose MLP is up+down with a plain activation rather than a gated (SwiGLU) triple.
_UNGATED_MODEL_TYPES = frozenset({"opt", "gpt2", "gpt_neox", "gptj", "bloom", "falcon", "phi", "starcoder2"})
_EXPERT_COUNT_KEYS = ("num_local_experts", "n_routed_experts", "num_experts")
_EXPERTS_PER_TOKEN_KEYS = ("num_experts_per_tok", "experts_per_token", "moe_topk")


def load_hf_config(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The config as a dict, read from a file (or a folder holding config.json) when given a path."""
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    try:
        loaded = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelConfigError(f"cannot read a config.json from {path}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ModelConfigError(f"{path} does not hold a JSON object")
    return loaded


def shape_from_hf_config(source: str | Path | Mapping[str, Any], name: str | None = None) -> ModelShape:
    """A `ModelShape` from a Hugging Face config.json."""
    config = load_hf_config(source)
    text = config.get("text_config")
    fields = {**config, **text} if isinstance(text, Mapping) else config
    model_name = name or str(fields.get("_name_or_path") or fields.get("model_type") or "hf-config")
    try:
        shape = _shape(model_name, fields)
    except ValidationError as exc:
        raise ModelConfigError(f"config.json of {model_name} describes no valid model: {exc}") from exc
    total, active = estimate_params(shape)
    return shape.model_copy(
        update={
            "total_params_b": total / 1e9,
            "active_params_b": active / 1e9,
            "params_source": "estimated from config.json",
        }
    )


def _shape(name: str, c: Mapping[str, Any]) -> ModelShape:
    hidden = _int(c, name, "hidden_size", "d_model", "n_embd")
    heads = _int(c, name, "num_attention_heads", "n_head")
    mla = c.get("kv_lora_rank") is not None
    rope = int(c.get("qk_rope_head_dim") or 0)
    if mla:
        head_dim = int(c.get("qk_nope_head_dim") or 0) + rope
    else:
        head_dim = int(c.get("head_dim") or hidden // heads)
    experts = next((int(c[k]) for k in _EXPERT_COUNT_KEYS if c.get(k)), 1)
    per_token = next((int(c[k]) for k in _EXPERTS_PER_TOKEN_KEYS if c.get(k)), 1) if experts > 1 else 1
    dense_width = _int(c, name, "intermediate_size", "ffn_dim", "n_inner")
    return ModelShape(
        name=name,
        source="config.json",
        num_layers=_int(c, name, "num_hidden_layers", "n_layer", "num_layers"),
        hidden_size=hidden,
        num_attention_heads=heads,
        num_kv_heads=int(c.get("num_key_value_heads") or heads),
        head_dim=head_dim,
        v_head_dim=c.get("v_head_dim"),
        intermediate_size=dense_width,
        moe_intermediate_size=c.get("moe_intermediate_size") if experts > 1 else None,
        vocab_size=_int(c, name, "vocab_size"),
        # transformers' PretrainedConfig ties embeddings unless a config says otherwise.
        tie_word_embeddings=bool(c.get("tie_word_embeddings", True)),
        gated_mlp=str(c.get("model_type", "")) not in _UNGATED_MODEL_TYPES,
        num_experts=experts,
        experts_per_token=per_token,
        shared_experts=int(c.get("n_shared_experts") or 0) if experts > 1 else 0,
        dense_layers=int(c.get("first_k_dense_replace") or 0) if experts > 1 else 0,
        attention=AttentionKind.MLA if mla else AttentionKind.GQA,
        kv_lora_rank=c.get("kv_lora_rank"),
        q_lora_rank=c.get("q_lora_rank"),
        qk_rope_head_dim=rope if mla else None,
        # Placeholders: replaced by the estimate from the shape.
        total_params_b=1.0,
        active_params_b=1.0,
        weight_dtype=_weight_dtype(c),
        expert_weight_dtype=_expert_dtype(c),
        max_context_tokens=c.get("max_position_embeddings"),
    )


def _int(c: Mapping[str, Any], name: str, *keys: str) -> int:
    for key in keys:
        value = c.get(key)
        if value is not None:
            return int(value)
    raise ModelConfigError(f"config.json of {name} has no {' / '.join(keys)}")


def _quant_method(c: Mapping[str, Any]) -> str:
    quant = c.get("quantization_config")
    return str(quant.get("quant_method", "")).lower() if isinstance(quant, Mapping) else ""


def _weight_dtype(c: Mapping[str, Any]) -> WeightDtype:
    if _quant_method(c) == "fp8":
        return "fp8"
    return "float16" if str(c.get("torch_dtype") or c.get("dtype")) == "float16" else "bfloat16"


def _expert_dtype(c: Mapping[str, Any]) -> WeightDtype | None:
    return "mxfp4" if _quant_method(c) == "mxfp4" else None
