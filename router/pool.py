"""A pool as the router sees it: its model, routing policy, handoff connector and admission rules.

Built from the InferencePool resource (Kubernetes mode) or from command-line flags (static mode);
both paths end in the same frozen `PoolConfig`. The KV a handoff moves is sized by the planner's
formula (`tandem.planner.kv_cache`), never a copy of it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import ValidationError

from tandem.api import InferencePoolSpec
from tandem.api.resource import InferencePool
from tandem.api.spec import (
    AdmissionPolicy,
    AttentionKind,
    BalancePolicy,
    DisaggregationMode,
    KvConnector,
    LmcacheOptions,
    RouterTimeouts,
    SloSpec,
)
from tandem.api.status import PlanStatus
from tandem.api.timing import EngineTiming
from tandem.planner import PlannerError, pool_model
from tandem.planner.kv_cache import pd_buffer_chunks
from tandem.router.admission.base import GpuTime
from tandem.router.connectors.registry import CONNECTORS
from tandem.router.decision import RoutingPolicy
from tandem.router.engine_http import Timeouts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolConfig:
    name: str
    model: str  # served model id, matched exactly against a request's `model`
    routing: RoutingPolicy = field(default_factory=RoutingPolicy)
    connector: KvConnector = KvConnector.LMCACHE
    lmcache: LmcacheOptions = field(default_factory=LmcacheOptions)
    decode_tp: int = 1  # decoder tensor-parallel ranks: one LMCache receiver port pair each
    # DP ranks behind one endpoint of each role: vLLM's internal DP load balancing, one API server
    # per replica (the operator renders no other mode; docs/router.md, "Data-parallel engines").
    prefill_dp: int = 1
    decode_dp: int = 1
    kv_notifications: int = 1  # LMCache notifications per handoff: prefiller ranks that send KV
    admission: AdmissionPolicy = AdmissionPolicy.FIFO
    max_queue: int = 1024
    slo: SloSpec = field(default_factory=SloSpec)  # targets: the `slo` admission deadline, the SLO counter
    decoder_buffer_chunks: int | None = None  # LMCache PD buffer of one decoder rank, in chunks
    trust_client_priority: bool = False  # believe every client's admission headers (client_hints.py)
    max_model_len: int | None = None  # the engines' context length, where the spec fixes it
    timeouts: RouterTimeouts = field(default_factory=RouterTimeouts)
    # How fast the engines run (the plan's engine timing): what cost-based admission predicts GPU
    # time with. Static mode, and a pool whose status has no timing yet: EngineTiming's defaults.
    gpu_time: GpuTime = field(default_factory=lambda: GpuTime(EngineTiming(), EngineTiming()))

    @cached_property
    def engine_timeouts(self) -> Timeouts:
        """The timeouts of a call to an engine (the prefill leg's: `prefill_timeouts`)."""
        t = self.timeouts
        return Timeouts(t.connect_seconds, t.first_byte_seconds, t.idle_seconds)

    @cached_property
    def prefill_timeouts(self) -> Timeouts:
        """The prefill leg is a whole answer of one token: its first byte is all of it."""
        t = self.timeouts
        return Timeouts(t.connect_seconds, t.prefill_seconds, t.idle_seconds)

    def receiver_ports(self) -> tuple[list[int], list[int]]:
        """LMCache decoder init and alloc ports, one per TP rank (the operator's contract)."""
        ranks = range(self.decode_tp)
        return [self.lmcache.peer_init_port + r for r in ranks], [
            self.lmcache.peer_alloc_port + r for r in ranks
        ]


def _handoff_size(
    spec: InferencePoolSpec, connector: KvConnector, decode_tp: int, planned_buffer: int | None
) -> tuple[int | None, int]:
    """(PD buffer chunks of a decoder rank, None where the connector has no such buffer;
    notifications per handoff) by the planner's formula, for the model as the planner resolves it
    (catalog or spec.model.architecture), of the buffer the operator renders (the spec's pin, else
    the plan's `pd_buffer_bytes`). A model it cannot resolve gets no buffer: no handoffs (the
    operator deploys no engines for one either)."""
    kind, lmcache = CONNECTORS[connector], spec.disaggregation.kv_transfer.lmcache
    try:
        model = pool_model(spec)
    except (PlannerError, ValidationError) as exc:
        attention = spec.model.architecture.attention if spec.model.architecture else AttentionKind.GQA
        if kind.pd_buffer:
            log.error("cannot size the KV cache of %s, so no handoffs: %s", spec.model.name, exc)
        return (0 if kind.pd_buffer else None), kind.notifications(AttentionKind(attention), decode_tp)
    chunks = (
        pd_buffer_chunks(model, decode_tp, lmcache.chunk_size, lmcache.decoder_buffer(planned_buffer))
        if kind.pd_buffer
        else None
    )
    return chunks, kind.notifications(model.attention, decode_tp)


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
    # A role the plan has not sized yet is taken as one engine per endpoint until it is.
    prefill_dp = plan.prefill.data_parallel if plan and plan.prefill else 1
    decode_dp = plan.decode.data_parallel if plan and plan.decode else 1
    lmcache = disaggregation.kv_transfer.lmcache
    connector = disaggregation.connector
    planned_buffer = plan.decode.pd_buffer_bytes if plan and plan.decode else None
    buffer_chunks, notifications = _handoff_size(spec, connector, decode_tp, planned_buffer)
    routing = RoutingPolicy(
        mode=DisaggregationMode(disaggregation.mode),
        threshold=default_threshold if threshold is None else threshold,
        balance=BalancePolicy(spec.router.balance_policy),
        prefill_saturation=prefill_saturation,
        pd_chunk_tokens=lmcache.chunk_size if buffer_chunks is not None else None,
    )
    return PoolConfig(
        name=str(pool.metadata.get("name", "")),
        model=spec.model.name,
        routing=routing,
        connector=connector,
        lmcache=lmcache,
        decode_tp=decode_tp,
        prefill_dp=prefill_dp,
        decode_dp=decode_dp,
        kv_notifications=notifications,
        admission=AdmissionPolicy(spec.router.admission_policy),
        max_queue=spec.router.max_queue,
        slo=spec.slo,
        decoder_buffer_chunks=buffer_chunks,
        max_model_len=spec.model.max_model_len,
        timeouts=spec.router.timeouts,
        trust_client_priority=spec.router.trust_client_priority,
        gpu_time=_gpu_time(plan),
    )


def _gpu_time(plan: PlanStatus | None) -> GpuTime:
    """The plan's engine timing: the prefill role's for prompts (the decoder's where no prefiller
    runs: aggregated serving), the decode role's for answers."""
    decode = plan.decode.engine_timing if plan and plan.decode else None
    prefill = plan.prefill.engine_timing if plan and plan.prefill and plan.prefill.replicas else None
    decode = decode or EngineTiming()
    return GpuTime(prefill or decode, decode)
