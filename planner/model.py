"""Model shapes: what the cost model needs to know of a transformer, and what follows from it.

A shape comes from the catalog (data/models.yaml), from a pool's `ModelArchitecture` override, or
from a Hugging Face config.json (`tandem.planner.hf_config`). Parameter counts follow from the shape
(`estimate_params`) when no published figure is given.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tandem.api import ModelArchitecture
from tandem.api.spec import AttentionKind

WeightDtype = Literal["bfloat16", "float16", "fp8", "mxfp4"]
KvCacheDtype = Literal["auto", "fp8"]

# Bytes per stored weight; MXFP4 holds 32 4-bit values with one 8-bit scale (4.25 bits).
DTYPE_BYTES: dict[str, float] = {"bfloat16": 2.0, "float16": 2.0, "fp8": 1.0, "mxfp4": 4.25 / 8}
# vLLM's kv_cache_dtype "auto" keeps the cache in the activation dtype; "fp8" halves it.
KV_CACHE_BYTES: dict[str, float] = {"auto": 2.0, "fp8": 1.0}
ACTIVATION_BYTES = 2.0


class ModelShape(BaseModel):
    """A decoder-only transformer's shape, parameter counts and checkpoint dtype."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    aliases: tuple[str, ...] = ()
    source: str = ""
    params_source: str = ""
    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_kv_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    v_head_dim: int | None = Field(default=None, ge=1, description="MLA value head size; default head_dim.")
    intermediate_size: int = Field(ge=1)
    moe_intermediate_size: int | None = Field(default=None, ge=1)
    vocab_size: int = Field(ge=1)
    tie_word_embeddings: bool = False
    gated_mlp: bool = True
    num_experts: int = Field(default=1, ge=1)
    experts_per_token: int = Field(default=1, ge=1)
    shared_experts: int = Field(default=0, ge=0)
    dense_layers: int = Field(default=0, ge=0)
    attention: AttentionKind = AttentionKind.GQA
    kv_lora_rank: int | None = Field(default=None, ge=1)
    q_lora_rank: int | None = Field(default=None, ge=1)
    qk_rope_head_dim: int | None = Field(default=None, ge=0)
    total_params_b: float = Field(gt=0)
    active_params_b: float = Field(gt=0)
    weight_dtype: WeightDtype = "bfloat16"
    expert_weight_dtype: WeightDtype | None = None
    kv_cache_dtype: KvCacheDtype = "auto"
    max_context_tokens: int | None = Field(default=None, ge=16)

    @model_validator(mode="after")
    def _consistent(self) -> ModelShape:
        if self.attention == AttentionKind.MLA and self.kv_lora_rank is None:
            raise ValueError(f"{self.name}: MLA attention needs kv_lora_rank")
        if self.experts_per_token > self.num_experts:
            raise ValueError(f"{self.name}: experts_per_token exceeds num_experts")
        if self.active_params_b > self.total_params_b * 1.0001:
            raise ValueError(f"{self.name}: active parameters exceed total parameters")
        return self

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def is_mla(self) -> bool:
        return self.attention == AttentionKind.MLA

    @property
    def expert_width(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def mlp_matrices(self) -> int:
        return 3 if self.gated_mlp else 2

    @property
    def total_params(self) -> float:
        return self.total_params_b * 1e9

    @property
    def active_params(self) -> float:
        return self.active_params_b * 1e9

    @property
    def routed_expert_params(self) -> float:
        """Parameters of the routed experts (zero for a dense model)."""
        if not self.is_moe:
            return 0.0
        moe_layers = self.num_layers - self.dense_layers
        return float(moe_layers * self.num_experts * self.mlp_matrices * self.hidden_size * self.expert_width)

    @property
    def embedding_params(self) -> float:
        """The input embedding table: read row by row, never streamed whole in a forward pass."""
        return 0.0 if self.tie_word_embeddings else float(self.vocab_size * self.hidden_size)

    def kv_bytes_per_token(self) -> float:
        """KV cache bytes one token occupies across all layers (before any tensor-parallel split).

        GQA keeps K and V for every KV head; MLA keeps one compressed latent plus the decoupled
        RoPE key, shared by all heads.
        """
        if self.is_mla:
            assert self.kv_lora_rank is not None
            latent = self.kv_lora_rank + (self.qk_rope_head_dim or 0)
            return self.num_layers * latent * KV_CACHE_BYTES[self.kv_cache_dtype]
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * KV_CACHE_BYTES[self.kv_cache_dtype]

    def weight_bytes(self) -> float:
        """Bytes of all weights as stored in memory."""
        dense_bytes = DTYPE_BYTES[self.weight_dtype]
        expert_bytes = DTYPE_BYTES[self.expert_weight_dtype or self.weight_dtype]
        experts = self.routed_expert_params
        return (self.total_params - experts) * dense_bytes + experts * expert_bytes

    def with_dtype(self, dtype: str) -> ModelShape:
        """The shape served in `dtype` ("auto" keeps the checkpoint's dtypes)."""
        if dtype == "auto":
            return self
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"unknown dtype {dtype!r}; known: auto, {', '.join(DTYPE_BYTES)}")
        return self.model_copy(update={"weight_dtype": dtype, "expert_weight_dtype": None})


def estimate_params(shape: ModelShape) -> tuple[float, float]:
    """Total and per-token active parameters the shape implies (biases and norms left out)."""
    h, layers = shape.hidden_size, shape.num_layers
    heads = shape.num_attention_heads
    if shape.is_mla:
        assert shape.kv_lora_rank is not None
        rope = shape.qk_rope_head_dim or 0
        v_dim = shape.v_head_dim or shape.head_dim
        q = (
            h * shape.q_lora_rank + shape.q_lora_rank * heads * shape.head_dim
            if shape.q_lora_rank
            else h * heads * shape.head_dim
        )
        kv = h * (shape.kv_lora_rank + rope) + shape.kv_lora_rank * heads * (shape.head_dim - rope + v_dim)
        attention = q + kv + heads * v_dim * h
    else:
        attention = h * heads * shape.head_dim * 2 + 2 * h * shape.num_kv_heads * shape.head_dim
    matrices = shape.mlp_matrices
    dense_mlp = matrices * h * shape.intermediate_size
    if shape.is_moe:
        expert = matrices * h * shape.expert_width
        moe_layers = layers - shape.dense_layers
        router = h * shape.num_experts
        total_mlp = shape.dense_layers * dense_mlp + moe_layers * (
            (shape.num_experts + shape.shared_experts) * expert + router
        )
        active_mlp = shape.dense_layers * dense_mlp + moe_layers * (
            (shape.experts_per_token + shape.shared_experts) * expert + router
        )
    else:
        total_mlp = active_mlp = layers * dense_mlp
    embeddings = shape.vocab_size * h * (1 if shape.tie_word_embeddings else 2)
    return layers * attention + total_mlp + embeddings, layers * attention + active_mlp + embeddings


def shape_from_architecture(name: str, arch: ModelArchitecture) -> ModelShape:
    """A shape from a pool's `spec.model.architecture` (models the catalog does not know).

    For an MoE model `intermediateSize` is the width of one expert.
    """
    total = arch.total_params_b
    return ModelShape(
        name=name,
        source="spec.model.architecture",
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_kv_heads=arch.num_kv_heads,
        head_dim=arch.head_dim or arch.hidden_size // arch.num_attention_heads,
        intermediate_size=arch.intermediate_size,
        vocab_size=arch.vocab_size,
        num_experts=arch.num_experts,
        experts_per_token=arch.experts_per_token,
        attention=AttentionKind(arch.attention),
        kv_lora_rank=arch.kv_lora_rank,
        qk_rope_head_dim=arch.qk_rope_head_dim,
        total_params_b=total,
        active_params_b=min(arch.active_params_b or total, total),
    )
