"""From a sized role to the `RolePlan` that the plan reports, engine timing included."""

from __future__ import annotations

from tandem.planner.demand import Demand
from tandem.planner.model import ModelShape
from tandem.planner.plan import PrefixReusePlan, Role, RolePlan
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
    pd_buffer_bytes: int | None = None,
) -> RolePlan:
    """`kv_transfer_ms_per_token`: the handoff's cost per prompt token (0 for aggregated replicas)."""
    layout = sized.layout
    # A DP rank is an engine of its own: the timing and limits are one rank's. A prefill replica
    # decodes only the first token of each request (and its sizing counts sequences per engine).
    engines = layout.dp
    sequences = 1.0 if role == "prefill" else sized.operating_sequences / engines
    max_batch = sized.max_sequences if role == "prefill" else sized.max_sequences // engines
    timing = engine_timing(
        model,
        layout,
        sequences=sequences,
        context=demand.decode_context,
        max_num_seqs=max_batch,
        max_num_batched_tokens=sized.max_num_batched_tokens,
        kv_capacity_tokens=sized.kv_capacity,
        kv_transfer_ms_per_token=kv_transfer_ms_per_token,
        aggregated=role == "aggregated",
    )
    return RolePlan(
        role=role,
        gpu_type=layout.gpu.name,
        gpu_device=layout.gpu.device_name,
        tensor_parallel=layout.tp,
        pipeline_parallel=layout.pp,
        data_parallel=layout.dp,
        data_parallel_local=layout.dp_local,
        expert_parallel=layout.ep,
        all2all_backend=layout.all2all,
        nodes=layout.nodes,
        replicas=sized.replicas,
        gpus=sized.gpus,
        max_batch=max(1, max_batch),
        max_num_batched_tokens=sized.max_num_batched_tokens,
        kv_capacity_tokens=sized.kv_capacity,
        gpu_memory_utilization=layout.calibration.gpu_memory_utilization,
        engine_timing=timing,
        max_requests_per_second=sized.max_rps,
        utilization=demand.rps / sized.max_rps if sized.max_rps else 0.0,
        cost_per_hour_usd=sized.cost_per_hour,
        predicted_ttft_ms=sized.predicted_ttft_ms,
        predicted_itl_ms=sized.predicted_itl_ms,
        prefill_chunk_tokens=sized.prefill_chunk if role == "aggregated" else None,
        prefix_reuse=_prefix_reuse(sized, demand) if role == "prefill" else None,
        pd_buffer_bytes=pd_buffer_bytes,
        pinned=pins.names(),
    )


def _prefix_reuse(sized: Sized, demand: Demand) -> PrefixReusePlan | None:
    """Where the prefill replica serves reused prefixes; None when the workload names no working set."""
    if demand.reuse.working_set_tokens is None or demand.reuse.fraction == 0:
        return None
    split = sized.reuse
    return PrefixReusePlan(
        gpu_share=split.gpu,
        cpu_share=split.cpu,
        disk_share=split.disk,
        recomputed_share=max(0.0, split.recomputed),
        prefill_ms=sized.prefill_ms,
        recompute_ms=sized.recompute_prefill_ms,
    )
