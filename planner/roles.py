"""From a sized role to the `RolePlan` that the plan reports, engine timing included."""

from __future__ import annotations

from tandem.planner.demand import Demand
from tandem.planner.model import ModelShape
from tandem.planner.plan import Role, RolePlan
from tandem.planner.request import RolePins
from tandem.planner.sizing import Sized
from tandem.planner.timing import engine_timing


def role_plan(
    model: ModelShape,
    sized: Sized,
    role: Role,
    pins: RolePins,
    demand: Demand,
    kv_transfer_ms_per_token: float,
) -> RolePlan:
    """`kv_transfer_ms_per_token`: the handoff's cost per prompt token (0 for aggregated replicas)."""
    layout = sized.layout
    # A prefill replica decodes only the first token of each request.
    sequences = 1.0 if role == "prefill" else sized.operating_sequences
    timing = engine_timing(
        model,
        layout,
        sequences=sequences,
        context=demand.decode_context,
        max_num_seqs=sized.max_sequences,
        max_num_batched_tokens=sized.max_num_batched_tokens,
        kv_capacity_tokens=sized.kv_capacity,
        kv_transfer_ms_per_token=kv_transfer_ms_per_token,
    )
    return RolePlan(
        role=role,
        gpu_type=layout.gpu.name,
        tensor_parallel=layout.tp,
        pipeline_parallel=layout.pp,
        replicas=sized.replicas,
        gpus=sized.gpus,
        max_batch=sized.max_sequences,
        max_num_batched_tokens=sized.max_num_batched_tokens,
        kv_capacity_tokens=sized.kv_capacity,
        engine_timing=timing,
        max_requests_per_second=sized.max_rps,
        utilization=demand.rps / sized.max_rps if sized.max_rps else 0.0,
        cost_per_hour_usd=sized.cost_per_hour,
        predicted_ttft_ms=sized.predicted_ttft_ms,
        predicted_itl_ms=sized.predicted_itl_ms,
        prefill_chunk_tokens=sized.prefill_chunk if role == "aggregated" else None,
        pinned=pins.names(),
    )
