"""The operator's settings: default images and how it runs, read once from the environment.

The engine image pins vLLM and LMCache together; images/vllm-lmcache/Dockerfile builds this tag.
These constants are the one place those versions are named in code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tandem.api.tracing import TracingConfigError, traces_endpoint
from tandem.operator.placement import GFD_PRODUCT_LABEL

VLLM_VERSION = "v0.33.0"
LMCACHE_VERSION = "0.5.6"
TANDEM_VERSION = "0.1.0"
# Both images (images/) run as this user.
IMAGE_UID = 65532
DEFAULT_TANDEM_IMAGE = f"ghcr.io/tandem-dev/tandem:{TANDEM_VERSION}"
DEFAULT_VLLM_IMAGE = f"ghcr.io/tandem-dev/vllm-lmcache:{VLLM_VERSION}-lmcache{LMCACHE_VERSION}"
DEFAULT_MAX_GPUS_PER_POOL = 256


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use; the message names it."""


class Images(BaseModel):
    """Images the operator renders when a pool names none."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tandem: str = Field(default=DEFAULT_TANDEM_IMAGE, min_length=1, description="Router and simulator.")
    vllm: str = Field(default=DEFAULT_VLLM_IMAGE, min_length=1, description="vLLM with LMCache.")
    run_as_user: int | None = Field(
        default=IMAGE_UID, ge=1, description="The images' non-root uid; None: run as each image's own user."
    )


class OperatorSettings(BaseModel):
    """How one operator process runs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    images: Images = Field(default_factory=Images)
    namespaces: tuple[str, ...] = Field(default=(), description="Watched namespaces; empty means all.")
    kubeconfig: Path | None = Field(
        default=None, description="None: in-cluster when there, else $KUBECONFIG or ~/.kube/config."
    )
    bind_host: str = Field(default="0.0.0.0", description="Address of the liveness and metrics endpoints.")
    liveness_port: int = Field(default=8080, ge=0, le=65535, description="0 turns the endpoint off.")
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="0 turns the endpoint off.")
    workers: int = Field(default=4, ge=1, le=64, description="Pools reconciled at the same time.")
    resync_seconds: float = Field(
        default=600, gt=0, description="Every pool is re-checked this often even without events."
    )
    max_gpus_per_pool: int = Field(
        default=DEFAULT_MAX_GPUS_PER_POOL,
        ge=1,
        description="The most GPUs one pool may take; a pool's spec.maxGpus may only lower it.",
    )
    retry_base_seconds: float = Field(
        default=1, gt=0, description="Delay before retrying a failed reconcile; doubles per failure."
    )
    retry_max_seconds: float = Field(default=300, gt=0, description="The retry delay's cap.")
    gpu_product_label: str = Field(
        default=GFD_PRODUCT_LABEL,
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$|^$",
        description="Node label naming the GPU type, which engine pods select; empty: none.",
    )
    network_policy: bool = Field(
        default=False,
        description="Render each pool's NetworkPolicy: only its prefill pods and routers reach the "
        "routers' notification port.",
    )
    otlp_traces_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces URL: a span per reconcile (OTEL_EXPORTER_OTLP_*, docs/tracing.md).",
    )


# Environment variable → settings field. Namespaces are comma-separated.
_ENV = {
    "TANDEM_IMAGE": ("images", "tandem"),
    "TANDEM_VLLM_IMAGE": ("images", "vllm"),
    "TANDEM_RUN_AS_USER": ("images", "run_as_user"),
    "TANDEM_OPERATOR_NAMESPACES": ("namespaces",),
    "TANDEM_BIND_HOST": ("bind_host",),
    "TANDEM_OPERATOR_LIVENESS_PORT": ("liveness_port",),
    "TANDEM_OPERATOR_METRICS_PORT": ("metrics_port",),
    "TANDEM_OPERATOR_WORKERS": ("workers",),
    "TANDEM_OPERATOR_RESYNC_SECONDS": ("resync_seconds",),
    "TANDEM_OPERATOR_MAX_GPUS_PER_POOL": ("max_gpus_per_pool",),
    "TANDEM_OPERATOR_RETRY_BASE_SECONDS": ("retry_base_seconds",),
    "TANDEM_OPERATOR_RETRY_MAX_SECONDS": ("retry_max_seconds",),
    "TANDEM_GPU_PRODUCT_LABEL": ("gpu_product_label",),
    "TANDEM_NETWORK_POLICY": ("network_policy",),
}
# Fields whose variable set to "" means "" (GPU selection off), not "unset".
_EMPTY_IS_A_VALUE = frozenset({("gpu_product_label",)})


def settings_from_env(env: Mapping[str, str], **overrides: object) -> OperatorSettings:
    """Settings from environment variables (see ``_ENV``), then ``overrides`` (CLI flags) on top."""
    raw: dict[str, object] = {}
    images: dict[str, str | None] = {}
    sources: dict[tuple[str, ...], str] = {}  # field path -> where its value came from
    for variable, path in _ENV.items():
        value = env.get(variable)
        if value is None or (not value and path not in _EMPTY_IS_A_VALUE):
            continue
        sources[path] = variable
        if path[0] == "images":
            images[path[1]] = None if value == "image" else value
        elif path[0] == "namespaces":
            raw["namespaces"] = tuple(part.strip() for part in value.split(",") if part.strip())
        else:
            raw[path[0]] = value
    if images:
        raw["images"] = images
    try:
        raw["otlp_traces_endpoint"] = traces_endpoint(None, env)
    except TracingConfigError as exc:
        raise SettingsError(str(exc)) from exc
    for name, override in overrides.items():
        if override is not None:
            raw[name] = override
            sources[(name,)] = "--" + name.replace("_", "-")
    try:
        return OperatorSettings.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            problems.append(f"{sources.get(loc, '.'.join(loc))}: {error['msg']}")
        raise SettingsError("; ".join(problems)) from exc
