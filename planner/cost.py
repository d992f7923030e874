"""The cost model: memory fit and the time of prefill, decode and KV handoff, as pure functions.

Every time is in milliseconds for one replica of `tp` x `pp` GPUs. A replica with pipeline
parallelism is timed as a request sees it (all stages in turn); it keeps `pp` micro-batches in
flight, which the sizing accounts for. The formulas and the meaning of every calibration parameter
are in planner/data/calibration/defaults.yaml; docs/planner.md derives them.

These functions are public so that a calibration fit can call them with trial parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tandem.planner.calibration import Calibration
from tandem.planner.gpu import GIB, GpuSpec
from tandem.planner.model import ACTIVATION_BYTES, DTYPE_BYTES, ModelShape

# vLLM V1 defaults for an OpenAI server: the chunked-prefill token budget and the number of
# sequences a step may hold; both set the activation memory that vLLM profiles at start-up.
DEFAULT_MAX_BATCHED_TOKENS = 8192
DEFAULT_MAX_NUM_SEQS = 256
LOGIT_BYTES = 4.0  # vLLM samples from float32 logits


def uses_fp8_compute(model: ModelShape, gpu: GpuSpec) -> bool:
    """FP8 weights run FP8 GEMMs where the chip has FP8 tensor cores (else weight-only, BF16 speed)."""
    return model.weight_dtype == "fp8" and gpu.fp8_tflops is not None


def weight_bytes_per_gpu(model: ModelShape, tp: int, pp: int) -> float:
    """Weights each GPU holds: TP shards every matrix, PP splits the layers."""
    return model.weight_bytes() / (tp * pp)


def kv_heads_per_gpu(model: ModelShape, tp: int) -> float:
    """KV heads each GPU keeps: a share of them, or one replica when TP exceeds their number."""
    return max(model.num_kv_heads / tp, 1.0)


def kv_bytes_per_token_per_gpu(model: ModelShape, tp: int, pp: int) -> float:
    """KV cache bytes one token takes on one GPU. MLA's latent is replicated, not split, by TP."""
    per_token = model.kv_bytes_per_token() / pp
    if model.is_mla:
        return per_token
    return per_token * kv_heads_per_gpu(model, tp) / model.num_kv_heads


def activation_bytes(model: ModelShape, tp: int, max_num_batched_tokens: int, max_num_seqs: int) -> float:
    """Peak activation memory of vLLM's profiling forward pass (one GPU).

    The widest tensors: the MLP's gate/up output and a few hidden-size buffers per token, plus the
    float32 logits of every sequence the sampler may see.
    """
    if model.is_moe:
        width = (model.experts_per_token + model.shared_experts) * model.expert_width
        width = max(width, model.intermediate_size if model.dense_layers else 0)
    else:
        width = model.intermediate_size
    per_token = (2 * width / tp + 4 * model.hidden_size) * ACTIVATION_BYTES
    logits = max_num_seqs * model.vocab_size / tp * LOGIT_BYTES
    return max_num_batched_tokens * per_token + logits


def kv_capacity_tokens(
    model: ModelShape,
    gpu: GpuSpec,
    tp: int,
    pp: int,
    calibration: Calibration,
    max_num_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS,
    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS,
) -> int:
    """Tokens of KV cache a replica holds; 0 when the weights and activations leave no room."""
    budget = gpu.memory_bytes * calibration.gpu_memory_utilization
    used = (
        weight_bytes_per_gpu(model, tp, pp)
        + activation_bytes(model, tp, max_num_batched_tokens, max_num_seqs)
        + calibration.runtime_reserve_gib * GIB
    )
    free = budget - used
    return max(0, math.floor(free / kv_bytes_per_token_per_gpu(model, tp, pp)))


def allreduce_ms(message_bytes: float, tp: int, gpu: GpuSpec, calibration: Calibration) -> float:
    """One tensor-parallel all-reduce of `message_bytes`: a latency plus ring traffic over the link.

    In a ring all-reduce each GPU sends 2 (tp - 1) / tp of the message.
    """
    if tp == 1:
        return 0.0
    ring_bytes = 2 * (tp - 1) / tp * message_bytes
    return calibration.allreduce_latency_us / 1000 + ring_bytes / (
        gpu.link_bytes_per_ms * calibration.allreduce_eff
    )


def attention_dim(model: ModelShape) -> float:
    """Mean of the query-key and value head sizes: attention does 4 * heads * this FLOPs per pair."""
    return (model.head_dim + (model.v_head_dim or model.head_dim)) / 2


def linear_flops_per_token(model: ModelShape, tp: int) -> float:
    """FLOPs of the linear layers per token on one tensor-parallel shard (all stages)."""
    return 2 * model.active_params / tp


def prefill_mfu(total_tokens: float, calibration: Calibration) -> float:
    """mfu(T) = mfu_max * T / (T + t_half_tokens)."""
    return calibration.mfu_max * total_tokens / (total_tokens + calibration.t_half_tokens)


def decode_mbu(batch: float, calibration: Calibration) -> float:
    """mbu(B) = mbu_max / (1 + B / mbu_batch_half)."""
    return calibration.mbu_max / (1 + batch / calibration.mbu_batch_half)


def weights_read_bytes(model: ModelShape, tokens: float) -> float:
    """Weight bytes one forward pass over `tokens` tokens streams from memory (whole model).

    The embedding table is only gathered from; of the routed experts only those some token picks
    are read: each of E experts is missed by one token with probability 1 - k/E.
    """
    dense, experts, miss = _weight_reads(model)
    if experts == 0:
        return dense
    missed: float = miss ** max(tokens, 1.0)
    return dense + experts * (1 - missed)


def _weight_reads(model: ModelShape) -> tuple[float, float, float]:
    """(bytes always read, bytes of routed experts, chance one token misses a given expert)."""
    dense_bytes = DTYPE_BYTES[model.weight_dtype]
    expert_bytes = DTYPE_BYTES[model.expert_weight_dtype or model.weight_dtype]
    routed = model.routed_expert_params
    dense = (model.total_params - routed - model.embedding_params) * dense_bytes
    return dense, routed * expert_bytes, 1 - model.experts_per_token / model.num_experts


class ReplicaCost:
    """The time model of one replica (model, GPU, TP, PP, calibration), its constants worked out
    once. The public functions below build one per call; the sizing keeps one per layout."""

    def __init__(self, model: ModelShape, gpu: GpuSpec, tp: int, pp: int, calibration: Calibration) -> None:
        cal = self.calibration = calibration
        self.peak = gpu.peak_flops_per_ms(uses_fp8_compute(model, gpu))
        self.bf16 = gpu.bf16_flops_per_ms
        self.hbm = gpu.hbm_bytes_per_ms
        self.flops_per_token = linear_flops_per_token(model, tp)
        # FLOPs of one query-key pair over all layers on one shard (QK^T and PV).
        self.flops_per_pair = 4 * model.num_attention_heads / tp * attention_dim(model) * model.num_layers
        self.kv_read_per_token = kv_bytes_per_token_per_gpu(model, tp, 1)
        dense, experts, self.expert_miss = _weight_reads(model)
        self.dense_read, self.expert_read = dense / tp, experts / tp
        # Two all-reduces per layer (after attention and after the MLP) of the tokens' hidden
        # states; pipeline stages pass them on over the node network.
        hidden_bytes = model.hidden_size * ACTIVATION_BYTES
        # Each layer's chain of kernels takes a fixed time per pass whatever the batch (ramp-up and
        # tails): it makes a deep, narrow shard (70B at TP=8) slower per weight byte than a shallow,
        # wide one.
        self.layers_ms = model.num_layers * cal.layer_overhead_us / 1000
        latency = cal.allreduce_latency_us / 1000
        self.fixed_ms = (pp - 1) * latency
        self.per_token_ms = (pp - 1) * hidden_bytes / gpu.network_bytes_per_ms
        if tp > 1:
            self.fixed_ms += 2 * model.num_layers * latency
            ring = 2 * (tp - 1) / tp * hidden_bytes
            self.per_token_ms += 2 * model.num_layers * ring / (gpu.link_bytes_per_ms * cal.allreduce_eff)

    def communication_ms(self, tokens: float) -> float:
        return self.fixed_ms + self.per_token_ms * tokens

    def prefill_ms(self, lengths: Sequence[int]) -> float:
        tokens = float(sum(lengths))
        if tokens <= 0:
            return 0.0
        cal = self.calibration
        pairs = sum(length * length for length in lengths) / 2
        return (
            self.flops_per_token * tokens / (self.peak * prefill_mfu(tokens, cal))
            + self.flops_per_pair * pairs / (self.bf16 * cal.attn_eff)
            + self.communication_ms(tokens)
            + self.layers_ms
            + cal.prefill_overhead_ms
        )

    def step_ms(self, batch: float, context: float, chunk: float = 0.0, span: float | None = None) -> float:
        cal = self.calibration
        weights = self.dense_read
        if self.expert_read:
            missed: float = self.expert_miss ** max(batch + chunk, 1.0)
            weights += self.expert_read * (1 - missed)
        memory = (weights + batch * context * self.kv_read_per_token) / (self.hbm * decode_mbu(batch, cal))
        compute = self.flops_per_token * batch / (self.peak * cal.mfu_decode)
        compute += self.flops_per_pair * batch * context / (self.bf16 * cal.mfu_decode)
        if chunk > 0:
            # The chunk's rows join GEMMs whose weights the decode batch streams anyway: no
            # small-batch penalty (t_half) on top, only their FLOPs at the large-batch efficiency.
            compute += self.flops_per_token * chunk / (self.peak * cal.mfu_max)
            compute += (
                self.flops_per_pair
                * chunk
                * (chunk / 2 if span is None else span)
                / (self.bf16 * cal.attn_eff)
            )
        fixed = self.communication_ms(batch + chunk) + self.layers_ms + cal.step_overhead_ms
        return max(memory, compute) + fixed


def prefill_time_ms(
    model: ModelShape, gpu: GpuSpec, tp: int, pp: int, lengths: Sequence[int], calibration: Calibration
) -> float:
    """Time to prefill one batch of prompts of `lengths` tokens (causal attention, empty cache)."""
    return ReplicaCost(model, gpu, tp, pp, calibration).prefill_ms(lengths)


def mixed_step_ms(
    model: ModelShape,
    gpu: GpuSpec,
    tp: int,
    pp: int,
    batch: float,
    context: float,
    chunk_tokens: float,
    calibration: Calibration,
    chunk_span: float | None = None,
) -> float:
    """One engine step that decodes `batch` sequences of mean `context` tokens and prefills a chunk
    of `chunk_tokens` prompt tokens, as chunked prefill does. With no chunk this is
    `decode_step_ms`.

    Memory-bound part: weights (MoE: the experts some token picks) plus the batch's KV, at mbu(B).
    Compute-bound part: decode GEMMs at mfu_decode, the chunk's GEMMs at mfu_max, attention of
    both. The step takes the larger. `chunk_span` is the mean number of keys a chunk token attends
    to: half a prompt's length however it is chunked (causal attention over L tokens is L^2/2
    pairs); it defaults to a single prompt of `chunk_tokens` tokens.
    """
    return ReplicaCost(model, gpu, tp, pp, calibration).step_ms(batch, context, chunk_tokens, chunk_span)


def decode_step_ms(
    model: ModelShape, gpu: GpuSpec, tp: int, pp: int, batch: float, context: float, calibration: Calibration
) -> float:
    """Time of one decode step (one token for each of `batch` sequences of mean `context` tokens).

    With pipeline parallelism this is the time a micro-batch of `batch` takes through all stages,
    which is the inter-token latency its sequences see.
    """
    return ReplicaCost(model, gpu, tp, pp, calibration).step_ms(batch, context)


def kv_transfer_streams(model: ModelShape, prefill_tp: int, decode_tp: int) -> int:
    """Parallel prefill->decode KV streams: one per TP rank pair for GQA; MLA's latent, replicated on
    every rank, moves once."""
    return 1 if model.is_mla else min(prefill_tp, decode_tp)


def kv_transfer_ms_per_token(
    model: ModelShape, network_gbps: float, calibration: Calibration, streams: int = 1
) -> float:
    """The bandwidth part of a KV handoff, per prompt token."""
    bytes_per_ms = network_gbps * 1e9 / 8 / 1e3
    return model.kv_bytes_per_token() / (streams * bytes_per_ms * calibration.kv_transfer_eff)


def kv_transfer_ms(
    model: ModelShape, tokens: float, network_gbps: float, calibration: Calibration, streams: int = 1
) -> float:
    """Time to move the KV cache of `tokens` tokens from a prefill to a decode replica over links of
    `network_gbps` Gbit/s, `streams` of them in parallel."""
    per_token = kv_transfer_ms_per_token(model, network_gbps, calibration, streams)
    return calibration.kv_transfer_latency_ms + tokens * per_token
