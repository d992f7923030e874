"""Everything a simulator process is configured with, parsed once (by ``tandem sim``, or by a test).

``--kv-transfer-config`` is vLLM's JSON (:class:`KVTransferConfig`); the LMCache YAML named by
``LMCACHE_CONFIG_FILE`` is read into :class:`LMCacheConfig`. Addresses are already resolved for
binding: see :func:`resolve_bind_host`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tandem.api.timing import EngineTiming
from tandem.sim.faults import Faults

DEFAULT_MODEL = "tandem/sim-model"
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "*"})


def resolve_bind_host(host: str | None, override: str | None) -> str:
    """The address to bind for ``host``: a wildcard means ``override`` when one is set.

    In the devcluster every pod shares one network namespace, so ``TANDEM_BIND_HOST`` gives each
    pod its own loopback address; a wildcard (``0.0.0.0``, unset) must then bind only that.
    """
    if host is None or host in _WILDCARDS:
        return override or "0.0.0.0"
    return host


class KVTransferConfig(BaseModel):
    """vLLM's ``--kv-transfer-config``; keys the simulator does not use are accepted and ignored."""

    model_config = ConfigDict(frozen=True, extra="allow")

    kv_connector: str
    kv_role: Literal["kv_producer", "kv_consumer", "kv_both"]
    engine_id: str | None = None
    kv_connector_extra_config: dict[str, Any] = Field(default_factory=dict)
    # vLLM 0.33 ``config/kv_transfer.py`` 88: a failed KV load fails the request unless "recompute".
    kv_load_failure_policy: Literal["recompute", "fail"] = "fail"

    @property
    def skip_last_n_tokens(self) -> int:
        return int(self.kv_connector_extra_config.get("skip_last_n_tokens", 0))

    @property
    def discard_partial_chunks(self) -> bool:
        return bool(self.kv_connector_extra_config.get("discard_partial_chunks", False))

    @property
    def kv_lease_duration(self) -> int:
        """NIXL block lease, seconds (``nixl/base_scheduler.py`` 82-86: extra config, default 30)."""
        return int(self.kv_connector_extra_config.get("kv_lease_duration", 30))


class LMCacheConfig(BaseModel):
    """The keys of LMCache's YAML config that shape PD disaggregation and the CPU tier; other keys
    (the disk and remote tiers among them) are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    chunk_size: int = Field(default=256, ge=1)
    # The CPU tier (v1/config.py 91-96: on, 5 GiB per worker rank, unless the file says otherwise).
    local_cpu: bool = True
    max_local_cpu_size: float = Field(default=5.0, ge=0)
    enable_pd: bool = False
    transfer_channel: str | None = None
    pd_role: Literal["sender", "receiver"] | None = None
    pd_backend_mode: Literal["async", "sync"] = "async"
    pd_proxy_host: str | None = None
    pd_proxy_port: int | None = None
    pd_peer_host: str | None = None
    pd_peer_init_port: list[int] | None = None
    pd_peer_alloc_port: list[int] | None = None
    pd_buffer_size: int | None = Field(default=None, ge=1)
    # How long a receiver waits for buffer space (``v1/config.py`` 262-267: default forever).
    pd_allocation_timeout_sec: float = Field(default=float("inf"), gt=0)
    extra_config: dict[str, Any] | None = None

    def save_only_first_rank(self, use_mla: bool) -> bool:
        """MLA KV is stored by the first rank only, unless ``extra_config`` says otherwise
        (``v1/token_database.py`` 114-120, ``v1/cache_engine.py`` 116-118)."""
        return use_mla and bool((self.extra_config or {}).get("save_only_first_rank", use_mla))

    @field_validator("pd_peer_init_port", "pd_peer_alloc_port", mode="before")
    @classmethod
    def _one_port_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    @classmethod
    def from_file(cls, path: Path) -> LMCacheConfig:
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: an LMCache config is a YAML mapping")
        return cls.model_validate(loaded)


class NixlSettings(BaseModel):
    """vLLM's NIXL side channel (``VLLM_NIXL_SIDE_CHANNEL_HOST`` / ``_PORT``); the block lease is
    ``kv_connector_extra_config.kv_lease_duration`` (:class:`KVTransferConfig`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    side_channel_host: str = "127.0.0.1"
    side_channel_port: int = Field(default=5600, ge=1, le=65535)
    # How long a decoder waits for a prefiller's answer beyond the modelled transfer time.
    read_grace_s: float = Field(default=5.0, gt=0)


class SimSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = DEFAULT_MODEL
    served_model_name: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_model_len: int = Field(default=32768, ge=2)
    seed: int = 0
    speed: float = Field(default=1.0, gt=0, description="time runs this many times faster than modelled")
    timing: EngineTiming = Field(default_factory=EngineTiming)
    block_size: int = Field(default=16, ge=1)
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = Field(default=1, ge=1)
    pipeline_parallel_size: int = Field(default=1, ge=1)
    data_parallel_size: int = Field(
        default=1, ge=1, description="DP ranks: engines of `timing` each, behind this one API server"
    )
    kv_bytes_per_token: int = Field(default=131072, ge=1, description="KV bytes per token, all TP ranks")
    use_mla: bool = Field(default=False, description="the model uses MLA (vLLM's model_config.use_mla)")
    kv_transfer_config: KVTransferConfig | None = None
    lmcache: LMCacheConfig | None = None
    lmcache_hash_seed: int | None = Field(
        default=None, description="PYTHONHASHSEED; None: random per process"
    )
    nixl: NixlSettings = Field(default_factory=NixlSettings)
    faults: Faults = Field(default_factory=Faults)
    admin_api: bool = True
    prompt_tokens_details: bool = Field(default=False, description="cached prompt tokens in usage")
    keep_alive_s: float = Field(default=5.0, gt=0)
    otlp_traces_endpoint: str | None = Field(
        default=None, description="vLLM's --otlp-traces-endpoint: an llm_request span per request"
    )

    @property
    def model_names(self) -> tuple[str, ...]:
        return self.served_model_name or (self.model,)

    @property
    def world_size(self) -> int:
        """Worker ranks (TP x PP): LMCache's ports and keys are per worker rank."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.max_model_len > self.timing.kv_capacity_tokens:
            raise ValueError(
                f"max_model_len {self.max_model_len} exceeds the KV capacity of "
                f"{self.timing.kv_capacity_tokens} tokens: one sequence could never fit"
            )
        return self
