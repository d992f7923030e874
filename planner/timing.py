"""`EngineTiming`: the cost model, linearised for one replica, as the simulator consumes it.

Prefill is exactly linear in the cost model (mfu(T) = mfu_max T / (T + t_half) makes the linear
layers cost 2P (T + t_half) / (peak mfu_max)), so its coefficients are read off the formula. Decode
(a max of memory and compute time) is linearised at the role's operating point: exact there and at
batch 1 for the same per-sequence context. An MoE model's routed experts (expert reads that
saturate with the tokens, their GEMMs, permute, the all-to-all: tandem.planner.moe) are not
linear: both fits leave them out and `moe_pass_ms` gives the cost model's time for them at token
counts from 1 to the step's token budget, which the simulator interpolates and adds per step.
"""

from __future__ import annotations

from tandem.api import EngineTiming
from tandem.api.timing import MoePoint
from tandem.planner.layouts import Layout
from tandem.planner.model import ModelShape
from tandem.planner.prefix_reuse import host_load_ms_per_token

_CONTEXT_STEP = 0.1  # relative step of the finite difference in context


def prefill_coefficients(
    model: ModelShape, layout: Layout, *, beside_decodes: bool = False
) -> tuple[float, float, float]:
    """(base ms, ms per token, ms per squared token) such that prefill_time_ms of a batch equals
    base + per_token * sum(L_i) + per_token_sq * sum(L_i^2).

    `beside_decodes`: the prefill of an aggregated replica, whose chunks ride in steps that decode
    too. There the chunk's rows join GEMMs whose weights the decode batch streams anyway, so the
    base is that of a step (fixed costs and step overhead) without the small-batch penalty, as
    `ReplicaCost.step_ms` times it."""
    replica, cal = layout.cost(model), layout.calibration
    linear = replica.flops_per_token / (replica.peak * cal.mfu_max)
    if beside_decodes:
        base = replica.fixed_ms + replica.layers_ms + cal.step_overhead_ms
    else:
        base = linear * cal.t_half_tokens + replica.fixed_ms + replica.layers_ms + cal.prefill_overhead_ms
    per_token = linear + replica.per_token_ms
    per_token_sq = replica.pair_ms / 2
    return base, per_token, per_token_sq  # without the routed experts: `moe_points`


def decode_coefficients(
    model: ModelShape, layout: Layout, sequences: float, context: float
) -> tuple[float, float, float]:
    """(base ms, ms per sequence, ms per 1000 context tokens) of a decode step of the replica's
    `sequences` (spread over its pipeline micro-batches) at mean `context` tokens each."""
    n = max(sequences, 1.0)
    total_context = n * context

    replica = layout.cost(model)

    def step(seqs: float, total: float) -> float:  # without the routed experts: `moe_points`
        batch = seqs / layout.pp
        return replica.step_ms(batch, total / seqs) - replica.experts_ms(batch)

    at_point = step(n, total_context)
    per_token = (
        (step(n, total_context * (1 + _CONTEXT_STEP)) - at_point) / (total_context * _CONTEXT_STEP)
        if context
        else 0.0
    )
    per_kilotoken = max(per_token * 1000, 0.0)
    if n > 1:
        single = step(1.0, context)
        per_seq = (at_point - single - per_kilotoken * (total_context - context) / 1000) / (n - 1)
    else:
        per_seq = step(2.0, 2 * context) - at_point - per_kilotoken * context / 1000
    per_seq = max(per_seq, 0.0)
    base = max(at_point - per_seq * n - per_kilotoken * total_context / 1000, 0.0)
    return base, per_seq, per_kilotoken


def moe_points(model: ModelShape, layout: Layout, max_num_batched_tokens: int) -> tuple[MoePoint, ...]:
    """The routed experts' ms of a step over 1, 2, 4, ... tokens up to the token budget (and at
    it); a step's tokens pass one pipeline stage's micro-batch at a time. Empty for a dense model."""
    replica = layout.cost(model)
    if replica.experts is None:
        return ()
    tokens = [
        2**i for i in range(max(max_num_batched_tokens, 1).bit_length()) if 2**i < max_num_batched_tokens
    ]
    return tuple(
        (float(t), replica.experts_ms(t / layout.pp)) for t in (*tokens, max(max_num_batched_tokens, 1))
    )


def engine_timing(
    model: ModelShape,
    layout: Layout,
    *,
    sequences: float,
    context: float,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    kv_capacity_tokens: int,
    kv_transfer_ms_per_token: float,
    aggregated: bool = False,
) -> EngineTiming:
    """The role's engine timing at its operating point (`sequences` decoding at `context` tokens;
    `aggregated`: prefill in chunks beside the decodes)."""
    prefill_base, prefill_token, prefill_sq = prefill_coefficients(model, layout, beside_decodes=aggregated)
    decode_base, decode_seq, decode_kilotoken = decode_coefficients(model, layout, sequences, context)
    return EngineTiming(
        prefill_base_ms=prefill_base,
        prefill_ms_per_token=prefill_token,
        prefill_ms_per_token_sq=prefill_sq,
        decode_step_base_ms=decode_base,
        decode_ms_per_seq=decode_seq,
        decode_ms_per_kilotoken=decode_kilotoken,
        kv_transfer_ms_per_token=kv_transfer_ms_per_token,
        offload_load_ms_per_token=host_load_ms_per_token(model, layout),
        max_num_seqs=max(1, max_num_seqs),
        max_num_batched_tokens=max(1, max_num_batched_tokens),
        kv_capacity_tokens=max(1, kv_capacity_tokens),
        moe_pass_ms=moe_points(model, layout, max(1, max_num_batched_tokens)),
    )
