"""InferencePool spec: what the user asks for.

Every field that the planner can fill is optional here; a value the user sets is "pinned" and wins
over the plan. Validation that must hold on old clusters (no CEL) is expressed as schema
constraints, which the CRD generator turns into OpenAPI.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import Field, model_validator

from tandem.api.autoscaling import AutoscalingSpec
from tandem.api.base import ApiModel

# Re-exported: the bounds were first defined here, and the planner and operator import them from here.
from tandem.api.bounds import MAX_DATA_PARALLEL as MAX_DATA_PARALLEL
from tandem.api.bounds import MAX_GPUS_PER_NODE as MAX_GPUS_PER_NODE
from tandem.api.bounds import MAX_PIPELINE_PARALLEL as MAX_PIPELINE_PARALLEL
from tandem.api.bounds import MAX_REPLICAS as MAX_REPLICAS
from tandem.api.bounds import MAX_TENSOR_PARALLEL as MAX_TENSOR_PARALLEL
from tandem.api.lengths import p90_problem
from tandem.api.offload import OffloadTiers

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"  # Service names
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


class SpeculativeDecoding(ApiModel):
    """vLLM's --speculative-config: a draft model, an EAGLE/MTP head, or n-gram prompt lookup."""

    method: str | None = Field(
        default=None, min_length=1, description="e.g. ngram, eagle, eagle3, mtp; vLLM infers it from model."
    )
    model: str | None = Field(
        default=None, min_length=1, description="Draft model or head (Hugging Face id)."
    )
    num_speculative_tokens: int = Field(ge=1, le=64, description="Tokens proposed per step.")
    prompt_lookup_max: int | None = Field(default=None, ge=1, description="ngram: longest n-gram matched.")
    prompt_lookup_min: int | None = Field(default=None, ge=1, description="ngram: shortest n-gram matched.")

    @model_validator(mode="after")
    def _method_or_model(self) -> SpeculativeDecoding:
        if self.method is None and self.model is None:
            raise ValueError("set method, model or both")
        return self


class EngineSpec(ApiModel):
    type: EngineType = EngineType.VLLM
    image: str | None = Field(default=None, description="Defaults to the operator's image for the type.")
    extra_args: list[str] = Field(
        default_factory=list,
        description="Appended to every engine's command line; flags the operator sets are refused "
        "(see Managed settings).",
    )
    env: list[EnvVar] = Field(
        default_factory=list, description="Names the operator sets are refused (see Managed settings)."
    )
    # Engine settings users tune, as fields (never through extraArgs): the planner sees them.
    gpu_memory_utilization: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="vLLM's --gpu-memory-utilization; the planner sizes the KV cache with the same "
        "fraction. Default: the GPU's calibration (vLLM's default, 0.92).",
    )
    enforce_eager: bool = Field(
        default=False, description="vLLM's --enforce-eager (no CUDA graphs; the planner assumes them)."
    )
    speculative_decoding: SpeculativeDecoding | None = Field(
        default=None, description="vLLM's --speculative-config (the planner does not model it)."
    )


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
    gpus_per_node: int = Field(default=8, ge=1, le=MAX_GPUS_PER_NODE)
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
    p90: int | None = Field(
        default=None,
        ge=1,
        description="The lengths are log-normal with this mean and p90: from the mean (every request "
        "the mean's length) to 2.27 times it (a log-normal's largest p90); without it, the mean's length.",
    )

    @model_validator(mode="after")
    def _log_normal(self) -> TokenStats:
        """A p90 from the mean to ``MAX_P90_RATIO`` times it (tandem.api.lengths)."""
        problem = None if self.p90 is None else p90_problem(self.mean, self.p90)
        if problem is not None:
            raise ValueError(problem)
        return self


class WorkloadSpec(ApiModel):
    requests_per_second: float = Field(default=1, gt=0)
    prompt_tokens: TokenStats = Field(default_factory=lambda: TokenStats(mean=1024))
    output_tokens: TokenStats = Field(default_factory=lambda: TokenStats(mean=256))
    prefix_reuse_fraction: float = Field(
        default=0, ge=0, le=1, description="Share of prompt tokens expected to hit a prefix cache."
    )
    prefix_working_set_tokens: int | None = Field(
        default=None,
        ge=1,
        description="Distinct tokens of the prefixes prompts reuse (e.g. 20 system prompts of 4000 "
        "tokens: 80000). With it the planner serves reuse from a prefill replica's GPU cache as far as "
        "that holds the set, then from the LMCache offload tiers at their load time, and recomputes the "
        "rest; without it every reused token is a GPU hit.",
    )


class DisaggregationMode(StrEnum):
    AUTO = "Auto"  # the planner decides, the router prefills locally when that pays
    ALWAYS = "Always"  # every request above the threshold is a handoff pair; 503 rather than local
    NEVER = "Never"  # aggregated serving: decode instances prefill everything


class KvConnector(StrEnum):
    """How a handoff's KV moves from prefill to decode: the one list of connector names every
    component's registry covers (docs/add-a-kv-connector.md)."""

    LMCACHE = "lmcache"  # LMCache PD: the prefiller pushes, the router awaits its notifications
    NIXL = "nixl"  # vLLM's NixlConnector: the decoder pulls what the prefill answer names
    NONE = "none"  # no handoffs: aggregated serving (mode Never)


def connector_in_use(mode: DisaggregationMode, connector: KvConnector) -> KvConnector:
    """The connector a pool runs: none for aggregated serving (mode Never), which hands nothing off
    and so renders no connector settings; `connector` otherwise, which must then be a real one."""
    if mode == DisaggregationMode.NEVER:
        return KvConnector.NONE
    if connector == KvConnector.NONE:
        raise ValueError(f"kvTransfer.connector none hands no KV off: it needs mode Never, not {mode}")
    return KvConnector(connector)


# A decoder's pd_buffer_size where neither the spec nor a plan sets one (a plan without handoffs).
DEFAULT_DECODER_BUFFER_BYTES = 2 * 1024**3


class LmcacheOptions(ApiModel):
    decoder_buffer_bytes: int | None = Field(
        default=None,
        ge=1024**2,
        description="pd_buffer_size of each decoder rank; unset: the planner sizes it for the planned "
        "rate (docs/planner.md, The decoders' PD buffer).",
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
    offload: OffloadTiers | None = Field(
        default=None,
        description="Tiers that keep prefillers' KV for later prompts with the same prefix (see "
        "docs/operator.md, Offload tiers).",
    )

    def decoder_buffer(self, planned: int | None) -> int:
        """The decoders' pd_buffer_size: the spec's pin, else the plan's, else the default."""
        return self.decoder_buffer_bytes or planned or DEFAULT_DECODER_BUFFER_BYTES


class KvTransferSpec(ApiModel):
    connector: KvConnector = Field(
        default=KvConnector.LMCACHE,
        description="How KV moves from prefill to decode; mode Never implies none (no connector).",
    )
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

    @model_validator(mode="after")
    def _connector_fits_mode(self) -> DisaggregationSpec:
        connector_in_use(self.mode, self.kv_transfer.connector)
        return self

    @model_validator(mode="after")
    def _offload_on_lmcache(self) -> DisaggregationSpec:
        in_use = self.connector
        if self.kv_transfer.lmcache.offload is not None and in_use != KvConnector.LMCACHE:
            raise ValueError(
                f"kvTransfer.lmcache.offload: the offload tiers are LMCache's, and this pool runs "
                f"connector {in_use}"
            )
        return self

    @property
    def connector(self) -> KvConnector:
        """The connector the pool runs (`connector_in_use`): what every component renders and uses."""
        return connector_in_use(self.mode, self.kv_transfer.connector)


class RoleSpec(ApiModel):
    """Per-role overrides. Unset fields come from the plan."""

    replicas: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)
    tensor_parallel: int | None = Field(default=None, ge=1, le=MAX_TENSOR_PARALLEL)
    pipeline_parallel: int | None = Field(default=None, ge=1, le=MAX_PIPELINE_PARALLEL)
    data_parallel: int | None = Field(
        default=None, ge=1, le=MAX_DATA_PARALLEL, description="MoE models: DP ranks per replica."
    )
    expert_parallel: bool | None = Field(
        default=None, description="MoE models: routed experts whole per GPU over DP x TP."
    )
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
    COST_OPTIMIZED = "cost-optimized"
    ADAPTIVE = "adaptive"


class RouterServiceSpec(ApiModel):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(default=8000, ge=1, le=65535)


# How long the router awaits a handoff's KV notifications (`tandem router --handoff-timeout`), and
# how long the operator lets an LMCache decoder wait for room in its PD buffer
# (`pd_allocation_timeout_sec`): an allocation that cannot be placed by the time the router stops
# waiting for it is rolled back, rather than landing after the request was served elsewhere.
HANDOFF_TIMEOUT_SECONDS = 30.0


class RouterTimeouts(ApiModel):
    """How long the router waits on an engine, in seconds (docs/operations.md says why)."""

    connect_seconds: float = Field(default=3, gt=0, description="To open a connection to an engine.")
    first_byte_seconds: float = Field(
        default=300,
        gt=0,
        description="From a request to its answer's first byte: a stream's first event, a whole answer.",
    )
    idle_seconds: float = Field(
        default=60, gt=0, description="Silence within an answer after its first byte: it ends with an error."
    )
    prefill_seconds: float = Field(
        default=120, gt=0, description="A handoff's prefill, request to answer; then fall back, or fail."
    )


class TracingSpec(ApiModel):
    """OpenTelemetry tracing of the pool's requests: the router's spans and the engines' own
    (docs/tracing.md)."""

    endpoint: str = Field(
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        max_length=2048,
        description="The collector's OTLP/HTTP traces URL, "
        "e.g. http://otel-collector.monitoring:4318/v1/traces.",
    )
    sampling_ratio: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="Share of requests traced that come without a parent; a client's traceparent "
        "decides for its own requests.",
    )


class RouterSpec(ApiModel):
    shared: str | None = Field(
        default=None,
        max_length=63,
        pattern=DNS_1035_LABEL,
        description="A router shared with the namespace's other pools that give this name: one "
        "Deployment and Service of this name serve every member's model, each by its own policies. "
        "Members agree on replicas, image, service, apiKeySecret and debug. Not ending in -router, "
        "-kv-notify, -prefill or -decode (a pool's own objects). Unset: the pool's own <pool>-router.",
    )
    replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    image: str | None = Field(default=None, description="Defaults to the operator's tandem image.")
    service: RouterServiceSpec = Field(default_factory=RouterServiceSpec)
    balance_policy: BalancePolicy = BalancePolicy.LEAST_LOAD
    admission_policy: AdmissionPolicy = AdmissionPolicy.FIFO
    max_queue: int = Field(default=1024, ge=0, description="Queued requests before 429.")
    api_key_secret: SecretKeyRef | None = Field(
        default=None,
        description=(
            "Bearer keys, one per line; `KEY priority` lets a key set the admission headers, "
            "`KEY tokens=N/PERIOD` gives it N tokens a minute, hour or day (then 429)."
        ),
    )
    trust_client_priority: bool = Field(
        default=False,
        description="Honour x-tandem-priority and x-tandem-ttft-ms from every client, not only granted keys.",
    )
    debug: bool = Field(
        default=False,
        description="Expose engine URLs to clients: route headers and per-endpoint metric labels.",
    )
    timeouts: RouterTimeouts = Field(default_factory=RouterTimeouts)
    tracing: TracingSpec | None = Field(
        default=None, description="Trace requests through the router and the engines; unset: no tracing."
    )


class EndpointPickerFailureMode(StrEnum):
    FAIL_CLOSE = "FailClose"
    FAIL_OPEN = "FailOpen"


class EndpointPickerSpec(ApiModel):
    """Your endpoint picker (EPP), which a Gateway asks which engine serves each request."""

    name: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_1035_LABEL,
        description="Its Service, in the pool's namespace.",
    )
    port: int = Field(
        default=9002, ge=1, le=65535, description="The Service port of its ext-proc (gRPC) endpoint."
    )
    failure_mode: EndpointPickerFailureMode = Field(
        default=EndpointPickerFailureMode.FAIL_CLOSE,
        description="While the picker does not answer, the Gateway refuses requests (FailClose) or "
        "sends them to a decode engine of its own choosing (FailOpen).",
    )


class GatewayApiSpec(ApiModel):
    """A Gateway API Inference Extension InferencePool over the decode engines, for your Gateway."""

    endpoint_picker: EndpointPickerSpec


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
    max_gpus: int | None = Field(
        default=None,
        ge=1,
        description="The most GPUs the pool may take, both roles together; the planner sizes within "
        "it, and a plan or pin beyond it is Infeasible. The operator's --max-gpus-per-pool caps it.",
    )
    gateway_api: GatewayApiSpec | None = Field(
        default=None,
        alias="gatewayAPI",
        description="Put the decode engines behind your Gateway and endpoint picker as well as the "
        "router (see docs/gateway-api.md); needs the Gateway API Inference Extension CRDs.",
    )
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
