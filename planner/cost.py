"""The cost model: memory fit and the time of prefill, decode and KV handoff, as pure functions.

Every time is in milliseconds for one replica of `tp` x `pp` GPUs, or, with data-parallel attention
(`dp` > 1), for one of its `dp` ranks of `tp` GPUs while every rank runs a batch alike (their MoE
layers span all dp x tp GPUs: tandem.planner.moe). A replica with pipeline parallelism is timed as
a request sees it (all stages in turn); it keeps `pp` micro-batches in flight, which the sizing
accounts for. The formulas and the meaning of every calibration parameter
are in planner/data/calibration/defaults.yaml; docs/planner.md derives them.

These functions are public so that a calibration fit can call them with trial parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tandem.planner.calibration import Calibration
from tandem.planner.gpu import GIB, GpuSpec
from tandem.planner.kv_cache import kv_bytes_per_token_per_gpu, kv_heads_per_gpu
from tandem.planner.model import ACTIVATION_BYTES, DTYPE_BYTES, ModelShape
from tandem.planner.moe import ALL2ALL_BACKENDS, ExpertCost, expert_bytes, routed_active_params

# vLLM V1 defaults for an OpenAI server: the chunked-prefill token budget and the number of
# sequences a step may hold; both set the activation memory that vLLM profiles at start-up.
DEFAULT_MAX_BATCHED_TOKENS = 8192
DEFAULT_MAX_NUM_SEQS = 256
LOGIT_BYTES = 4.0  # vLLM samples from float32 logits


def uses_fp8_compute(model: ModelShape, gpu: GpuSpec) -> bool:
    """FP8 weights run FP8 GEMMs where the chip has FP8 tensor cores (else weight-only, BF16 speed)."""
    return model.weight_dtype == "fp8" and gpu.fp8_tflops is not None


def weight_bytes_per_gpu(model: ModelShape, tp: int, pp: int, dp: int = 1) -> float:
    """Weights each GPU holds: TP shards every matrix, PP splits the layers; DP ranks replicate all
    but the routed experts, which spread over all dp x tp GPUs."""
    experts = expert_bytes(model)
    return ((model.weight_bytes() - experts) / tp + experts / (tp * dp)) / pp


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
    *,
    dp: int = 1,
    buffer_gib: float = 0.0,
) -> int:
    """Tokens of KV cache a replica (with DP: each DP rank) holds; 0 when the weights and
    activations leave no room. `buffer_gib`: the all-to-all backend's buffers per GPU."""
    budget = gpu.memory_bytes * calibration.gpu_memory_utilization
    used = (
        weight_bytes_per_gpu(model, tp, pp, dp)
        + activation_bytes(model, tp, max_num_batched_tokens, max_num_seqs)
        + (calibration.runtime_reserve_gib + buffer_gib) * GIB
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
    """FLOPs of the linear layers per token on one tensor-parallel shard (all stages), the routed
    experts left to tandem.planner.moe."""
    return 2 * (model.active_params - routed_active_params(model)) / tp


def prefill_mfu(total_tokens: float, calibration: Calibration) -> float:
    """mfu(T) = mfu_max * T / (T + t_half_tokens)."""
    return calibration.mfu_max * total_tokens / (total_tokens + calibration.t_half_tokens)


def _dense_read_bytes(model: ModelShape) -> float:
    """Bytes of the weights every pass streams whole: all but the embedding table (only gathered
    from) and the routed experts (tandem.planner.moe reads those a batch picks)."""
    routed = model.routed_expert_params
    return (model.total_params - routed - model.embedding_params) * DTYPE_BYTES[model.weight_dtype]


class ReplicaCost:
    """The time model of one replica (model, GPU, TP, PP, calibration; DP ranks, expert
    parallelism and the all-to-all backend for MoE models), its constants worked out once. The
    public functions below build one per call; the sizing keeps one per layout."""

    def __init__(
        self,
        model: ModelShape,
        gpu: GpuSpec,
        tp: int,
        pp: int,
        calibration: Calibration,
        *,
        dp: int = 1,
        ep: bool = False,
        all2all: str | None = None,
        gpus_per_node: int = 8,
    ) -> None:
        cal = self.calibration = calibration
        self.peak = gpu.peak_flops_per_ms(uses_fp8_compute(model, gpu))
        self.bf16 = gpu.bf16_flops_per_ms
        self.hbm = gpu.hbm_bytes_per_ms
        self.flops_per_token = linear_flops_per_token(model, tp)
        # FLOPs of one query-key pair over all layers on one shard (QK^T and PV).
        self.flops_per_pair = 4 * model.num_attention_heads / tp * attention_dim(model) * model.num_layers
        # Prefill attention per query-key pair (compute-bound).
        self.pair_ms = self.flops_per_pair / (self.bf16 * cal.attn_eff)
        # Decode attention streams every sequence's KV cache once, at its own share of HBM
        # bandwidth: a split-KV decode kernel keeps it whatever the batch. One (sequence, KV head)
        # stream goes no faster than kv_stream_eff of it, which bounds a step of few streams.
        kv_per_token = kv_bytes_per_token_per_gpu(model, tp, 1)
        self.kv_read_ms_per_token = kv_per_token / (self.hbm * cal.kv_read_eff)
        stream_per_token = kv_per_token / kv_heads_per_gpu(model, tp)  # MLA: one latent "head"
        self.kv_stream_ms_per_token = stream_per_token / (self.hbm * cal.kv_stream_eff)
        self.dense_read = _dense_read_bytes(model) / tp
        self.experts = (
            ExpertCost(
                model,
                gpu,
                cal,
                tp=tp,
                dp=dp,
                ep=ep,
                backend=ALL2ALL_BACKENDS[all2all] if all2all else None,
                gpus_per_node=gpus_per_node,
            )
            if model.is_moe
            else None
        )
        # Per decode step: ms per weight byte at batch 1 (mbu(B) scales it), per decoded and per
        # chunk token of the linear layers when compute-bound, per (sequence, key) of attention.
        self.weight_ms_per_byte = 1 / (self.hbm * cal.mbu_max)
        self.decode_token_ms = self.flops_per_token / (self.peak * cal.mfu_decode)
        self.chunk_token_ms = self.flops_per_token / (self.peak * cal.mfu_max)
        self.decode_pair_ms = self.flops_per_pair / (self.bf16 * cal.mfu_decode)
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

    def experts_ms(self, tokens: float) -> float:
        """The routed experts of a pass over `tokens` tokens (per DP rank); 0 for a dense model."""
        return self.experts.pass_ms(tokens) if self.experts else 0.0

    def prefill_ms(self, lengths: Sequence[int]) -> float:
        tokens = float(sum(lengths))
        if tokens <= 0:
            return 0.0
        cal = self.calibration
        pairs = sum(length * length for length in lengths) / 2
        return (
            self.flops_per_token * tokens / (self.peak * prefill_mfu(tokens, cal))
            + self.pair_ms * pairs
            + self.communication_ms(tokens)
            + self.experts_ms(tokens)
            + self.layers_ms
            + cal.prefill_overhead_ms
        )

    def step_ms(self, batch: float, context: float, chunk: float = 0.0, span: float | None = None) -> float:
        """Two kernels in turn, each bound by its memory traffic or its FLOPs: the linear layers
        (the weights at mbu(B)) and attention (the batch's KV cache at kv_read_eff, a single KV
        stream at kv_stream_eff); then the routed experts (tandem.planner.moe)."""
        return self.steps_ms(batch, context, chunk, (span,))[0]

    def steps_ms(
        self, batch: float, context: float, chunk: float, spans: Sequence[float | None]
    ) -> list[float]:
        """`step_ms` at each of `spans` (the keys a chunk token attends to), the terms the span
        leaves alone worked out once: the timing of a prompt's chunks at one batch and chunk size."""
        cal = self.calibration
        weights = self.dense_read
        # A chunk's rows join GEMMs whose weights the decode batch streams anyway: no small-batch
        # penalty (t_half) on top, only their FLOPs at the large-batch efficiency. The weights take
        # weights / (hbm * mbu(B)), mbu(B) = mbu_max / (1 + B / mbu_batch_half): their share of
        # bandwidth falls as the batch's GEMMs grow from matrix-vector towards compute-bound.
        linear = max(
            weights * self.weight_ms_per_byte * (1 + batch / cal.mbu_batch_half),
            batch * self.decode_token_ms + chunk * self.chunk_token_ms,
        )
        decode_flops_ms = batch * context * self.decode_pair_ms
        kv_read_ms = batch * context * self.kv_read_ms_per_token
        kv_stream_ms = min(batch, 1.0) * context * self.kv_stream_ms_per_token
        communication = self.communication_ms(batch + chunk)
        experts = self.experts_ms(batch + chunk)
        steps = []
        for span in spans:
            attention_flops_ms = decode_flops_ms
            if chunk > 0:
                attention_flops_ms += self.pair_ms * chunk * (chunk / 2 if span is None else span)
            attention = max(kv_read_ms, kv_stream_ms, attention_flops_ms)
            steps.append(linear + attention + communication + experts + self.layers_ms + cal.step_overhead_ms)
        return steps


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
