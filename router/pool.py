"""A pool as the router sees it: its model, routing policy, handoff connector and admission rules.

Built from the InferencePool resource (Kubernetes mode) or from command-line flags (static mode);
both paths end in the same frozen `PoolConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tandem.api.resource import InferencePool
from tandem.api.spec import (
    AdmissionPolicy,
    AttentionKind,
    BalancePolicy,
    DisaggregationMode,
    Dtype,
    KvConnector,
    LmcacheOptions,
    ModelArchitecture,
)
from tandem.router.decision import RoutingPolicy


@dataclass(frozen=True)
class PoolConfig:
    name: str
    model: str  # served model id, matched exactly against a request's `model`
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    connector: KvConnector = KvConnector.LMCACHE
    lmcache: LmcacheOptions = field(default_factory=LmcacheOptions)
    decode_tp: int = 1  # decoder tensor-parallel ranks: LMCache notifications to await per handoff
    admission: AdmissionPolicy = AdmissionPolicy.FIFO
    max_queue: int = 1024
    ttft_ms: float = 2000.0  # the pool's TTFT target: the `slo` admission policy's deadline
    decoder_buffer_chunks: int | None = None  # LMCache PD buffer of one decoder rank, in chunks

    def receiver_ports(self) -> tuple[list[int], list[int]]:
        """LMCache decoder init and alloc ports, one per TP rank (the operator's contract)."""
        ranks = range(self.decode_tp)
        return [self.lmcache.peer_init_port + r for r in ranks], [
            self.lmcache.peer_alloc_port + r for r in ranks
        ]


def kv_bytes_per_token(architecture: ModelArchitecture, dtype: str, tensor_parallel: int) -> int:
    """KV cache bytes one token occupies on one TP rank of a decoder."""
    width = 1 if dtype == Dtype.FP8 else 2
    if architecture.attention == AttentionKind.MLA:
        # The compressed latent is replicated on every rank.
        latent = (architecture.kv_lora_rank or 512) + (architecture.qk_rope_head_dim or 64)
        return architecture.num_layers * latent * width
    head_dim = architecture.head_dim or architecture.hidden_size // architecture.num_attention_heads
    heads_per_rank = -(-architecture.num_kv_heads // tensor_parallel)
    return 2 * architecture.num_layers * heads_per_rank * head_dim * width


def pool_config_from_resource(
    obj: Mapping[str, Any], *, default_threshold: int, prefill_saturation: float
) -> PoolConfig:
    """Read an InferencePool object (as the API server returns it). A threshold of "auto" takes the
    plan's, and `default_threshold` until there is a plan."""
    pool = InferencePool.model_validate(dict(obj))
    spec, plan = pool.spec, pool.status.plan if pool.status else None
    disaggregation = spec.disaggregation
    threshold: int | None = None
    if isinstance(disaggregation.prompt_tokens_threshold, int):
        threshold = disaggregation.prompt_tokens_threshold
    elif plan is not None:
        threshold = plan.prompt_tokens_threshold
    decode_tp = spec.decode.tensor_parallel or (plan.decode.tensor_parallel if plan and plan.decode else 1)
    lmcache = disaggregation.kv_transfer.lmcache
    buffer_chunks = None
    if spec.model.architecture is not None:
        per_token = kv_bytes_per_token(spec.model.architecture, spec.model.dtype, decode_tp)
        buffer_chunks = lmcache.decoder_buffer_bytes // (per_token * lmcache.chunk_size)
    connector = KvConnector(disaggregation.kv_transfer.connector)
    routing = RoutingPolicy(
        mode=DisaggregationMode(disaggregation.mode),
        threshold=default_threshold if threshold is None else threshold,
        balance=BalancePolicy(spec.router.balance_policy),
        prefill_saturation=prefill_saturation,
        pd_chunk_tokens=lmcache.chunk_size if connector == KvConnector.LMCACHE and buffer_chunks else None,
    )
    return PoolConfig(
        name=str(pool.metadata.get("name", "")),
        model=spec.model.name,
        routing=routing,
        connector=connector,
        lmcache=lmcache,
        decode_tp=decode_tp,
        admission=AdmissionPolicy(spec.router.admission_policy),
        max_queue=spec.router.max_queue,
        ttft_ms=spec.slo.ttft_ms,
        decoder_buffer_chunks=buffer_chunks,
    )
