"""InferencePool spec: what the user asks for.

Every field that the planner can fill is optional here; a value the user sets is "pinned" and wins
over the plan. Validation that must hold on old clusters (no CEL) is expressed as schema
constraints, which the CRD generator turns into OpenAPI.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, model_validator

from tandem.api.base import ApiModel

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"


class SecretKeyRef(ApiModel):
    """A key of a Secret in the pool's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    key: str = Field(default="token", min_length=1)


class PvcSource(ApiModel):
    """Weights already on a PersistentVolumeClaim (mounted read-only)."""

    claim_name: str = Field(min_length=1)
    path: str = Field(default="/", description="Folder of the model inside the volume.")


class AttentionKind(StrEnum):
    GQA = "gqa"  # multi-head and grouped-query attention: KV heads of head_dim each
    MLA = "mla"  # DeepSeek multi-head latent attention: one compressed latent per token


class ModelArchitecture(ApiModel):
    """Model shape, for models the planner's catalog does not know."""

    num_layers: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    num_attention_heads: int = Field(ge=1)
    num_kv_heads: int = Field(ge=1)
    head_dim: int | None = Field(default=None, ge=1, description="Defaults to hiddenSize/heads.")
    intermediate_size: int = Field(ge=1)
    vocab_size: int = Field(ge=1)
    total_params_b: float = Field(gt=0, description="Total parameters, in billions.")
    active_params_b: float | None = Field(
        default=None, gt=0, description="Parameters used per token (MoE), in billions; defaults to total."
    )
    num_experts: int = Field(default=1, ge=1)
    experts_per_token: int = Field(default=1, ge=1)
    attention: AttentionKind = AttentionKind.GQA
    kv_lora_rank: int | None = Field(default=None, ge=1, description="MLA latent size.")
    qk_rope_head_dim: int | None = Field(default=None, ge=0, description="MLA decoupled RoPE size.")


class Dtype(StrEnum):
    AUTO = "auto"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FP8 = "fp8"


class ModelSpec(ApiModel):
    name: str = Field(
        min_length=1,
        description="Model id as served (Hugging Face id), e.g. meta-llama/Llama-3.1-8B-Instruct.",
    )
    source: PvcSource | None = Field(default=None, description="Load weights from a PVC instead of the hub.")
    hf_token_secret: SecretKeyRef | None = Field(default=None, description="Secret holding HF_TOKEN.")
    architecture: ModelArchitecture | None = None
    dtype: Dtype = Dtype.AUTO
    max_model_len: int | None = Field(default=None, ge=16)


class EngineType(StrEnum):
    VLLM = "vllm"
    SIMULATOR = "simulator"


class EnvVar(ApiModel):
    name: str = Field(pattern=ENV_NAME)
    value: str | None = None
    value_from: dict[str, Any] | None = Field(
        default=None, description="As in a Kubernetes EnvVar (secretKeyRef, configMapKeyRef, fieldRef)."
    )


class EngineSpec(ApiModel):
    type: EngineType = EngineType.VLLM
    image: str | None = Field(default=None, description="Defaults to the operator's image for the type.")
    extra_args: list[str] = Field(
        default_factory=list, description="Appended to every engine's command line."
    )
    env: list[EnvVar] = Field(default_factory=list)


class Toleration(ApiModel):
    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = None


class Placement(ApiModel):
    """Where a role's pods go, when prefill and decode use different accelerators."""

    type: str = Field(min_length=1, description="GPU type from the planner catalog, e.g. H100-80GB.")
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)


class AcceleratorSpec(ApiModel):
    type: str = Field(min_length=1, description="GPU type from the planner catalog, e.g. H100-80GB.")
    gpus_per_node: int = Field(default=8, ge=1, le=16)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    prefill: Placement | None = Field(default=None, description="Prefill on another GPU type.")
    decode: Placement | None = Field(default=None, description="Decode on another GPU type.")


class SloSpec(ApiModel):
    ttft_ms: float = Field(default=2000, gt=0, description="Time to first token target, milliseconds.")
    itl_ms: float = Field(default=50, gt=0, description="Inter-token latency target, milliseconds.")
    percentile: float = Field(default=90, ge=50, le=99.9, description="Percentile the targets hold at.")


class TokenStats(ApiModel):
    mean: int = Field(ge=1)
    p90: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _p90_not_below_mean(self) -> TokenStats:
        if self.p90 is not None and self.p90 < self.mean:
            raise ValueError(f"p90 ({self.p90}) must not be below mean ({self.mean})")
        return self


class WorkloadSpec(ApiModel):
    requests_per_second: float = Field(default=1, gt=0)
    prompt_tokens: TokenStats = Field(default_factory=lambda: TokenStats(mean=1024))
    output_tokens: TokenStats = Field(default_factory=lambda: TokenStats(mean=256))
    prefix_reuse_fraction: float = Field(
        default=0, ge=0, le=1, description="Share of prompt tokens expected to hit a prefix cache."
    )


class DisaggregationMode(StrEnum):
    AUTO = "Auto"  # the planner decides, the router prefills locally when that pays
    ALWAYS = "Always"  # every request above the threshold is a handoff pair; 503 rather than local
    NEVER = "Never"  # aggregated serving: decode instances prefill everything


class KvConnector(StrEnum):
    LMCACHE = "lmcache"
    NIXL = "nixl"


class LmcacheOptions(ApiModel):
    decoder_buffer_bytes: int = Field(
        default=2 * 1024**3, ge=1024**2, description="pd_buffer_size, decoders."
    )
    prefiller_buffer_bytes: int = Field(
        default=1024**3, ge=1024**2, description="pd_buffer_size, prefillers."
    )
    chunk_size: int = Field(default=256, ge=16)
    transfer_channel: Literal["nixl"] = "nixl"
    nixl_backends: list[str] = Field(default_factory=lambda: ["UCX"])
    proxy_port: int = Field(default=7500, ge=1024, le=65535, description="Router's notification port.")
    peer_init_port: int = Field(default=7300, ge=1024, le=65535, description="First decoder init port.")
    peer_alloc_port: int = Field(default=7400, ge=1024, le=65535, description="First decoder alloc port.")


class KvTransferSpec(ApiModel):
    connector: KvConnector = KvConnector.LMCACHE
    lmcache: LmcacheOptions = Field(default_factory=LmcacheOptions)


class DisaggregationSpec(ApiModel):
    mode: DisaggregationMode = DisaggregationMode.AUTO
    prompt_tokens_threshold: int | Literal["auto"] = Field(
        default="auto",
        description='Prompt length from which requests become handoff pairs; "auto" takes the plan\'s.',
    )
    kv_transfer: KvTransferSpec = Field(default_factory=KvTransferSpec)

    @model_validator(mode="after")
    def _threshold_positive(self) -> DisaggregationSpec:
        if isinstance(self.prompt_tokens_threshold, int) and self.prompt_tokens_threshold < 0:
            raise ValueError("promptTokensThreshold must be 'auto' or a non-negative integer")
        return self


class RoleSpec(ApiModel):
    """Per-role overrides. Unset fields come from the plan."""

    replicas: int | None = Field(default=None, ge=0)
    tensor_parallel: int | None = Field(default=None, ge=1, le=64)
    pipeline_parallel: int | None = Field(default=None, ge=1, le=64)
    resources: dict[str, dict[str, str]] | None = Field(
        default=None, description="Container resources (requests/limits), merged over the planned GPUs."
    )
    extra_args: list[str] = Field(default_factory=list)


class BalancePolicy(StrEnum):
    LEAST_LOAD = "least-load"
    ROUND_ROBIN = "round-robin"
    RANDOM = "random"
    SESSION = "session"
    PREFIX = "prefix"


class AdmissionPolicy(StrEnum):
    FIFO = "fifo"
    PRIORITY = "priority"
    SLO = "slo"


class RouterServiceSpec(ApiModel):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(default=8000, ge=1, le=65535)


class RouterSpec(ApiModel):
    replicas: int = Field(default=1, ge=0)
    image: str | None = Field(default=None, description="Defaults to the operator's tandem image.")
    service: RouterServiceSpec = Field(default_factory=RouterServiceSpec)
    balance_policy: BalancePolicy = BalancePolicy.LEAST_LOAD
    admission_policy: AdmissionPolicy = AdmissionPolicy.FIFO
    max_queue: int = Field(default=1024, ge=0, description="Queued requests before 429.")
    api_key_secret: SecretKeyRef | None = Field(default=None, description="Bearer keys, one per line.")


class InferencePoolSpec(ApiModel):
    model: ModelSpec
    engine: EngineSpec = Field(default_factory=EngineSpec)
    accelerator: AcceleratorSpec
    slo: SloSpec = Field(default_factory=SloSpec)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    disaggregation: DisaggregationSpec = Field(default_factory=DisaggregationSpec)
    prefill: RoleSpec = Field(default_factory=RoleSpec)
    decode: RoleSpec = Field(default_factory=RoleSpec)
    router: RouterSpec = Field(default_factory=RouterSpec)
