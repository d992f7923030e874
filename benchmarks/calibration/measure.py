"""Measure prefill and decode step times of per-GPU transformer shards, for the planner's fit.

Builds decoder layers shaped like catalog models at one tensor-parallel (TP) shard, with random
bf16 weights, times a few layers with CUDA graphs and CUDA events, and scales to full depth:

    ms_full_depth = ms_per_layer * n_layers + ms_lm_head

Prefill rows: batch prompts of equal length (causal attention); the LM head runs on the last token
of each prompt. Decode rows: one new token per sequence against a KV cache of `seq_len` tokens; the
LM head runs on every sequence. Attention is PyTorch's SDPA: each point times every SDPA kernel
that takes the shape (flash, cuDNN, efficient) on its own, times the layers with the fastest, and
with flash as well (the `_flash` columns). Probe rows: a bf16 GEMM, a device copy and a read, the
achieved ceilings. The TP all-reduce is not measured (one GPU): the planner models it separately.

    python benchmarks/calibration/measure.py            # full grid on a CUDA GPU, a few minutes
    python benchmarks/calibration/measure.py --quick    # tiny shapes, CPU smoke run
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (the conventional name)
from torch.nn.attention import SDPBackend, sdpa_kernel

DTYPE = torch.bfloat16
BYTES_PER_ELEMENT = 2
RMS_EPS = 1e-5
# Fraction of GPU memory an engine may use for weights + KV cache (vLLM's default utilisation).
MEMORY_FRACTION = 0.9
# Replays batched between two events, so one timing spans at least this long.
TARGET_SAMPLE_MS = 2.0
MAX_INNER_REPLAYS = 64
SPIN_UP_S = 3.0
# SDPA's kernels, by the name the CSV gives them; flash is the reference (the method's kernel before
# the others were timed too).
KERNELS: dict[str, SDPBackend] = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}

# Dense bf16 TFLOP/s and HBM GB/s from the vendors' datasheets; first matching substring wins.
SPECS: tuple[tuple[str, float, float], ...] = (
    ("H100 PCIe", 756.0, 2000.0),
    ("H100 NVL", 835.0, 3900.0),
    ("H100", 989.0, 3350.0),
    ("H200", 989.0, 4800.0),
)

COLUMNS = (
    "gpu_name",
    "torch_version",
    "model",
    "tp",
    "phase",
    "batch",
    "seq_len",
    "tokens",
    "context_tokens",
    "layers_timed",
    "n_layers",
    "ms_per_layer",
    "ms_attn_per_layer",
    "ms_lm_head",
    "ms_full_depth",
    "attention",
    *(f"ms_attn_{name}" for name in KERNELS),
    "ms_full_depth_flash",
    "flops_full_depth",
    "linear_flops_full_depth",
    "attn_flops_full_depth",
    "bytes_full_depth",
    "achieved_tflops",
    "achieved_gbps",
    "split",
    "status",
    "notes",
)


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only model's shapes as one TP shard holds them."""

    name: str
    tp: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    n_layers: int
    vocab: int
    # A shape the fit never sees: every point of it is held out.
    unseen: bool = False

    @property
    def heads(self) -> int:
        return self.n_heads // self.tp

    @property
    def kv_heads(self) -> int:
        # With more shards than KV heads each shard keeps a replica of one head.
        return max(1, self.n_kv_heads // self.tp)

    @property
    def inter(self) -> int:
        return self.intermediate // self.tp

    @property
    def vocab_shard(self) -> int:
        return math.ceil(self.vocab / self.tp)

    @property
    def qkv_out(self) -> int:
        return (self.heads + 2 * self.kv_heads) * self.head_dim

    @property
    def layer_params(self) -> int:
        attn = self.hidden * self.qkv_out + self.heads * self.head_dim * self.hidden
        mlp = 3 * self.hidden * self.inter
        return attn + mlp + 2 * self.hidden

    @property
    def lm_head_params(self) -> int:
        return self.hidden * self.vocab_shard

    @property
    def kv_bytes_per_token_layer(self) -> int:
        return 2 * self.kv_heads * self.head_dim * BYTES_PER_ELEMENT

    @property
    def weight_bytes(self) -> int:
        """Weights read per forward pass: the layers and the LM head."""
        return (self.layer_params * self.n_layers + self.lm_head_params) * BYTES_PER_ELEMENT

    @property
    def resident_bytes(self) -> int:
        """Weights held in memory: those read per pass plus the (untied) embedding table."""
        return self.weight_bytes + self.lm_head_params * BYTES_PER_ELEMENT


CATALOG: tuple[ModelShape, ...] = (
    ModelShape("llama-3.1-8b", 1, 4096, 32, 8, 128, 14336, 32, 128256),
    ModelShape("llama-3.1-70b", 8, 8192, 64, 8, 128, 28672, 80, 128256),
    ModelShape("llama-3.1-70b", 4, 8192, 64, 8, 128, 28672, 80, 128256),
    ModelShape("qwen2.5-7b", 1, 3584, 28, 4, 128, 18944, 28, 152064),
    # Shards no fit sees, to judge how the fit carries to other shapes.
    ModelShape("llama-3.1-8b", 2, 4096, 32, 8, 128, 14336, 32, 128256, unseen=True),
    ModelShape("qwen2.5-32b", 2, 5120, 40, 8, 128, 27648, 64, 152064, unseen=True),
    ModelShape("qwen2.5-72b", 8, 8192, 64, 8, 128, 29568, 80, 152064, unseen=True),
)
TINY = ModelShape("tiny", 1, 256, 4, 2, 64, 512, 4, 1000)


@dataclass(frozen=True)
class Grid:
    prefill_lengths: tuple[int, ...]
    prefill_batches: tuple[int, ...]
    max_prefill_tokens: int
    decode_batches: tuple[int, ...]
    decode_contexts: tuple[int, ...]
    depth_check_prefill: tuple[tuple[int, int], ...]
    depth_check_decode: tuple[tuple[int, int], ...]
    gemm_n: int
    copy_bytes: int

    def prefill_points(self) -> list[tuple[int, int]]:
        return [
            (b, length)
            for length in self.prefill_lengths
            for b in self.prefill_batches
            if b * length <= self.max_prefill_tokens
        ]

    def decode_points(self) -> list[tuple[int, int]]:
        return [(b, c) for b in self.decode_batches for c in self.decode_contexts]


FULL_GRID = Grid(
    prefill_lengths=(128, 512, 1024, 2048, 4096, 8192, 12288, 16384),
    prefill_batches=(1, 2, 4, 8, 16),
    max_prefill_tokens=32768,
    decode_batches=(1, 4, 16, 64, 128, 192, 256),
    decode_contexts=(512, 2048, 4096, 8192, 16384, 32768),
    depth_check_prefill=((1, 2048),),
    depth_check_decode=((1, 2048), (64, 2048)),
    gemm_n=8192,
    copy_bytes=2 << 30,
)
QUICK_GRID = Grid(
    prefill_lengths=(16, 64),
    prefill_batches=(1, 2),
    max_prefill_tokens=64,
    decode_batches=(1, 4),
    decode_contexts=(32, 128),
    depth_check_prefill=((1, 64),),
    depth_check_decode=((4, 128),),
    gemm_n=256,
    copy_bytes=8 << 20,
)


def split_for(index: int, shape: ModelShape) -> str:
    """Every third grid point of a (model, tp, phase) series is held out of the fit, and every
    point of an unseen shape."""
    return "holdout" if shape.unseen or index % 3 == 2 else "fit"


# ---- cost accounting (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class Cost:
    linear_flops: float
    attn_flops: float
    bytes: float

    @property
    def flops(self) -> float:
        return self.linear_flops + self.attn_flops


def prefill_cost(s: ModelShape, batch: int, length: int) -> Cost:
    tokens = batch * length
    linear = 2.0 * s.layer_params * tokens * s.n_layers + 2.0 * s.lm_head_params * batch
    # QK^T and PV, causal: half of the L x L score matrix.
    attn = 4.0 * s.heads * s.head_dim * batch * length * length / 2 * s.n_layers
    kv_written = tokens * s.kv_bytes_per_token_layer * s.n_layers
    return Cost(linear, attn, float(s.weight_bytes + kv_written))


def decode_cost(s: ModelShape, batch: int, context: int) -> Cost:
    linear = 2.0 * (s.layer_params * s.n_layers + s.lm_head_params) * batch
    attn = 4.0 * s.heads * s.head_dim * batch * context * s.n_layers
    kv_read = batch * context * s.kv_bytes_per_token_layer * s.n_layers
    return Cost(linear, attn, float(s.weight_bytes + kv_read))


# ---- the layer --------------------------------------------------------------------------------


@dataclass
class LayerWeights:
    """One decoder layer's shard weights, nn.Linear layout (out, in)."""

    norm_attn: torch.Tensor
    qkv: torch.Tensor
    o: torch.Tensor
    norm_mlp: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


def _linear_weight(out_features: int, in_features: int, device: torch.device) -> torch.Tensor:
    return torch.randn(out_features, in_features, device=device, dtype=DTYPE) / math.sqrt(in_features)


def make_layer(s: ModelShape, device: torch.device) -> LayerWeights:
    return LayerWeights(
        norm_attn=torch.ones(s.hidden, device=device, dtype=DTYPE),
        qkv=_linear_weight(s.qkv_out, s.hidden, device),
        o=_linear_weight(s.hidden, s.heads * s.head_dim, device),
        norm_mlp=torch.ones(s.hidden, device=device, dtype=DTYPE),
        gate_up=_linear_weight(2 * s.inter, s.hidden, device),
        down=_linear_weight(s.hidden, s.inter, device),
    )


def mlp_block(h: torch.Tensor, w: LayerWeights, s: ModelShape) -> torch.Tensor:
    x = F.rms_norm(h, (s.hidden,), w.norm_mlp, RMS_EPS)
    gate_up = F.linear(x, w.gate_up)
    act = F.silu(gate_up[:, : s.inter]) * gate_up[:, s.inter :]
    # The residual add rides in the GEMM epilogue, as fused engines do.
    return torch.addmm(h, act, w.down.t())


@dataclass(frozen=True)
class AttentionConfig:
    """One SDPA kernel: its name (a CSV column suffix), backend pinning and GQA handling."""

    name: str
    backend: Callable[[], AbstractContextManager[None]]
    native_gqa: bool = True

    @property
    def label(self) -> str:
        return self.name if self.native_gqa else f"{self.name} (prefill K/V expanded for GQA)"


def sdpa_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cfg: AttentionConfig) -> torch.Tensor:
    """Causal attention, q (B, H, L, D), k/v (B, KV, L, D)."""
    with cfg.backend():
        if cfg.native_gqa:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def split_qkv(qkv: torch.Tensor, s: ModelShape, batch: int, length: int) -> Iterator[torch.Tensor]:
    q_end = s.heads * s.head_dim
    k_end = q_end + s.kv_heads * s.head_dim
    for lo, hi, heads in ((0, q_end, s.heads), (q_end, k_end, s.kv_heads), (k_end, s.qkv_out, s.kv_heads)):
        yield qkv[:, lo:hi].view(batch, length, heads, s.head_dim).transpose(1, 2)


def prefill_layer(
    h: torch.Tensor, w: LayerWeights, s: ModelShape, batch: int, length: int, cfg: AttentionConfig
) -> torch.Tensor:
    x = F.rms_norm(h, (s.hidden,), w.norm_attn, RMS_EPS)
    q, k, v = split_qkv(F.linear(x, w.qkv), s, batch, length)
    out = sdpa_prefill(q, k, v, cfg).transpose(1, 2).reshape(batch * length, s.heads * s.head_dim)
    h = torch.addmm(h, out, w.o.t())
    return mlp_block(h, w, s)


def sdpa_decode(q: torch.Tensor, cache: torch.Tensor, cfg: AttentionConfig) -> torch.Tensor:
    """One query token per sequence. q (B, KV, G, D): the G query heads that share a KV head are
    packed as G query rows against it (how decode kernels handle GQA); cache (2, B, KV, C, D)."""
    with cfg.backend():
        return F.scaled_dot_product_attention(q, cache[0], cache[1])


def decode_layer(
    h: torch.Tensor, w: LayerWeights, cache: torch.Tensor, s: ModelShape, cfg: AttentionConfig
) -> torch.Tensor:
    batch = h.shape[0]
    group = s.heads // s.kv_heads
    x = F.rms_norm(h, (s.hidden,), w.norm_attn, RMS_EPS)
    qkv = F.linear(x, w.qkv)
    q_end = s.heads * s.head_dim
    q = qkv[:, :q_end].view(batch, s.kv_heads, group, s.head_dim)
    new_kv = qkv[:, q_end:].view(batch, 2, s.kv_heads, s.head_dim).transpose(0, 1)
    # The new token's K/V go into the last cache slot, as the engine's cache write does.
    cache.select(3, cache.shape[3] - 1).copy_(new_kv)
    out = sdpa_decode(q, cache, cfg).reshape(batch, q_end)
    h = torch.addmm(h, out, w.o.t())
    return mlp_block(h, w, s)


def lm_head(h: torch.Tensor, norm: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.linear(F.rms_norm(h, (h.shape[-1],), norm, RMS_EPS), weight)


# ---- timing -----------------------------------------------------------------------------------


@dataclass
class Timer:
    """Median time of a callable: CUDA graph replays between CUDA events on a GPU, wall clock on
    the CPU (smoke runs only)."""

    device: torch.device
    reps: int
    warmup: int = 3

    def ms(self, fn: Callable[[], object], graph: bool = True) -> float:
        if self.device.type == "cuda":
            return self._cuda_ms(fn, graph)
        for _ in range(self.warmup):
            fn()
        samples = []
        for _ in range(self.reps):
            start = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - start) * 1e3)
        return statistics.median(samples)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _cuda_ms(self, fn: Callable[[], object], use_graph: bool) -> float:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        run = fn
        if use_graph:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            run = graph.replay
        one = _events_ms(run, 1)
        inner = max(1, min(MAX_INNER_REPLAYS, math.ceil(TARGET_SAMPLE_MS / max(one, 1e-3))))
        return statistics.median(_events_ms(run, inner) / inner for _ in range(self.reps))


def _events_ms(run: Callable[[], object], count: int) -> float:
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(count):
        run()
    end.record()
    end.synchronize()
    return float(start.elapsed_time(end))


# ---- the run ----------------------------------------------------------------------------------


@dataclass
class Context:
    device: torch.device
    grid: Grid
    timer: Timer
    layers: int
    memory_budget: int
    # The SDPA kernels each phase may use, the reference one (flash on CUDA) first.
    kernels: dict[str, tuple[AttentionConfig, ...]]
    gpu_name: str
    writer: Callable[[dict[str, object]], None]

    @property
    def method_note(self) -> str:
        return "tp all-reduce not included; RoPE omitted"


@dataclass(frozen=True)
class Timing:
    """One point's times: the layers with the fastest attention kernel, and with the reference one."""

    kernel: str  # the fastest kernel, the one the layers were timed with
    ms_layer: float
    ms_attn: dict[str, float]  # attention alone, per layer, by kernel
    ms_head: float
    ms_layer_reference: float


def base_row(ctx: Context, s: ModelShape, phase: str) -> dict[str, object]:
    return {
        "gpu_name": ctx.gpu_name,
        "torch_version": torch.__version__,
        "model": s.name,
        "tp": s.tp,
        "phase": phase,
        "n_layers": s.n_layers,
    }


def finish_row(row: dict[str, object], cost: Cost, timing: Timing) -> None:
    layers = int(str(row["n_layers"]))
    total = timing.ms_layer * layers + timing.ms_head
    row.update(
        ms_per_layer=f"{timing.ms_layer:.5f}",
        ms_attn_per_layer=f"{timing.ms_attn[timing.kernel]:.5f}",
        ms_lm_head=f"{timing.ms_head:.5f}",
        ms_full_depth=f"{total:.4f}",
        attention=timing.kernel,
        ms_full_depth_flash=f"{timing.ms_layer_reference * layers + timing.ms_head:.4f}",
        achieved_tflops=f"{cost.flops / total / 1e9:.2f}",
        achieved_gbps=f"{cost.bytes / total / 1e6:.1f}",
        status="ok",
    )
    row.update({f"ms_attn_{name}": f"{ms:.5f}" for name, ms in timing.ms_attn.items()})


def cost_columns(cost: Cost) -> dict[str, object]:
    return {
        "flops_full_depth": f"{cost.flops:.6g}",
        "linear_flops_full_depth": f"{cost.linear_flops:.6g}",
        "attn_flops_full_depth": f"{cost.attn_flops:.6g}",
        "bytes_full_depth": f"{cost.bytes:.6g}",
    }


def hidden_states(tokens: int, s: ModelShape, device: torch.device) -> torch.Tensor:
    return torch.randn(tokens, s.hidden, device=device, dtype=DTYPE)


@dataclass(frozen=True)
class Point:
    batch: int
    seq_len: int
    split: str


@dataclass
class Shard:
    """The timed layers of one model shard, with its LM head and that head's timings by batch."""

    shape: ModelShape
    layers: list[LayerWeights]
    head_norm: torch.Tensor
    head: torch.Tensor
    head_ms: dict[int, float]


def build_shard(s: ModelShape, n_layers: int, device: torch.device) -> Shard:
    return Shard(
        shape=s,
        layers=[make_layer(s, device) for _ in range(n_layers)],
        head_norm=torch.ones(s.hidden, device=device, dtype=DTYPE),
        head=_linear_weight(s.vocab_shard, s.hidden, device),
        head_ms={},
    )


def lm_head_ms(ctx: Context, shard: Shard, batch: int) -> float:
    if batch not in shard.head_ms:
        h = hidden_states(batch, shard.shape, ctx.device)
        shard.head_ms[batch] = ctx.timer.ms(lambda: lm_head(h, shard.head_norm, shard.head))
    return shard.head_ms[batch]


def point_row(
    ctx: Context, shard: Shard, phase: str, point: Point, note: str
) -> tuple[dict[str, object], Cost]:
    s = shard.shape
    row = base_row(ctx, s, phase) | {
        "batch": point.batch,
        "seq_len": point.seq_len,
        "layers_timed": len(shard.layers),
        "split": point.split,
        "notes": "; ".join(n for n in (note, ctx.method_note) if n),
    }
    if phase == "prefill":
        cost = prefill_cost(s, point.batch, point.seq_len)
        row |= {"tokens": point.batch * point.seq_len, "context_tokens": point.batch * point.seq_len}
    else:
        cost = decode_cost(s, point.batch, point.seq_len)
        row |= {"tokens": point.batch, "context_tokens": point.batch * point.seq_len}
    return row | cost_columns(cost), cost


def failure_notes(exc: RuntimeError) -> dict[str, object]:
    """A point that fails is recorded and the run goes on: one device call must yield the rest."""
    first_line = (str(exc).splitlines() or [""])[0][:200]
    status = "skipped" if isinstance(exc, torch.OutOfMemoryError) else "error"
    return {"status": status, "notes": f"{type(exc).__name__}: {first_line}"}


def time_with_fastest_kernel(
    ctx: Context,
    kernels: tuple[AttentionConfig, ...],
    attention_ms: Callable[[AttentionConfig], float],
    layer_ms: Callable[[AttentionConfig], float],
    ms_head: float,
) -> Timing:
    """Attention alone with every kernel, then the layers with the fastest and with the reference
    (the first). A kernel that refuses the shape is left out; the reference must take it."""
    ms_attn: dict[str, float] = {}
    for kernel in kernels:
        try:
            ms_attn[kernel.name] = attention_ms(kernel)
        except RuntimeError:
            if kernel is kernels[0]:
                raise
    fastest = next(k for k in kernels if k.name == min(ms_attn, key=ms_attn.__getitem__))
    ms_layer = layer_ms(fastest)
    reference = ms_layer if fastest is kernels[0] else layer_ms(kernels[0])
    return Timing(fastest.name, ms_layer, ms_attn, ms_head, reference)


def time_prefill_point(ctx: Context, shard: Shard, point: Point) -> Timing:
    """One prefill batch through the timed layers, attention per kernel, and the LM head."""
    s, batch, length = shard.shape, point.batch, point.seq_len
    h = hidden_states(batch * length, s, ctx.device)
    q, k, v = split_qkv(F.linear(h, shard.layers[0].qkv), s, batch, length)

    def layer_ms(kernel: AttentionConfig) -> float:
        def step() -> torch.Tensor:
            x = h
            for w in shard.layers:
                x = prefill_layer(x, w, s, batch, length, kernel)
            return x

        return ctx.timer.ms(step) / len(shard.layers)

    return time_with_fastest_kernel(
        ctx,
        ctx.kernels["prefill"],
        lambda kernel: ctx.timer.ms(lambda: sdpa_prefill(q, k, v, kernel)),
        layer_ms,
        lm_head_ms(ctx, shard, batch),
    )


def time_decode_point(ctx: Context, shard: Shard, point: Point) -> Timing:
    """One decode step through the timed layers, attention per kernel, and the LM head."""
    s, batch, context = shard.shape, point.batch, point.seq_len
    caches = [
        torch.randn(2, batch, s.kv_heads, context, s.head_dim, device=ctx.device, dtype=DTYPE)
        for _ in shard.layers
    ]
    h = hidden_states(batch, s, ctx.device)
    q = torch.randn(batch, s.kv_heads, s.heads // s.kv_heads, s.head_dim, device=ctx.device, dtype=DTYPE)

    def layer_ms(kernel: AttentionConfig) -> float:
        def step() -> torch.Tensor:
            x = h
            for w, cache in zip(shard.layers, caches, strict=True):
                x = decode_layer(x, w, cache, s, kernel)
            return x

        return ctx.timer.ms(step) / len(shard.layers)

    def attention_ms(kernel: AttentionConfig) -> float:
        return ctx.timer.ms(lambda: [sdpa_decode(q, cache, kernel) for cache in caches]) / len(caches)

    return time_with_fastest_kernel(
        ctx, ctx.kernels["decode"], attention_ms, layer_ms, lm_head_ms(ctx, shard, batch)
    )


def measure_points(ctx: Context, shard: Shard, phase: str, points: list[Point], note: str = "") -> None:
    s = shard.shape
    timer = time_prefill_point if phase == "prefill" else time_decode_point
    for point in points:
        row, cost = point_row(ctx, shard, phase, point, note)
        kv_tokens = point.batch * point.seq_len if phase == "decode" else 0
        needed = s.resident_bytes + kv_tokens * s.kv_bytes_per_token_layer * s.n_layers
        if needed > ctx.memory_budget:
            row |= {
                "status": "skipped",
                "notes": f"full-depth weights+KV {needed / 2**30:.1f} GiB > "
                f"{MEMORY_FRACTION:.0%} of device memory ({ctx.memory_budget / 2**30:.1f} GiB)",
            }
        else:
            try:
                finish_row(row, cost, timer(ctx, shard, point))
            except RuntimeError as exc:
                row |= failure_notes(exc)
        ctx.writer(row)
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


def measure_model(ctx: Context, s: ModelShape) -> None:
    shard = build_shard(s, min(ctx.layers, s.n_layers), ctx.device)
    prefill = ctx.grid.prefill_points()
    decode = ctx.grid.decode_points()
    measure_points(ctx, shard, "prefill", [Point(b, n, split_for(i, s)) for i, (b, n) in enumerate(prefill)])
    measure_points(ctx, shard, "decode", [Point(b, c, split_for(i, s)) for i, (b, c) in enumerate(decode)])


def measure_depth_check(ctx: Context, s: ModelShape) -> None:
    """Time every layer at a few points, to check that per-layer times scale to full depth."""
    if s.resident_bytes > ctx.memory_budget // 2:
        return
    shard = build_shard(s, s.n_layers, ctx.device)
    note = "depth check: all layers timed"
    prefill = [Point(b, n, "holdout") for b, n in ctx.grid.depth_check_prefill]
    measure_points(ctx, shard, "prefill", prefill, note)
    measure_points(
        ctx, shard, "decode", [Point(b, c, "holdout") for b, c in ctx.grid.depth_check_decode], note
    )


def measure_gemm(ctx: Context, label: str = "", spin_up_s: float = 0.0, graph: bool = True) -> None:
    """bf16 GEMM n x n x n. Straight from idle it shows the burst rate; after `spin_up_s` of
    products, the rate the card sustains at its power limit."""
    n = ctx.grid.gemm_n
    pairs = [
        (torch.randn(n, n, device=ctx.device, dtype=DTYPE), torch.randn(n, n, device=ctx.device, dtype=DTYPE))
        for _ in range(3)
    ]
    out = torch.empty(n, n, device=ctx.device, dtype=DTYPE)

    def gemms() -> None:
        # Three operand sets in turn, so no product finds its inputs in L2.
        for a, b in pairs:
            torch.mm(a, b, out=out)

    deadline = time.perf_counter() + spin_up_s
    while time.perf_counter() < deadline:
        gemms()
        ctx.timer.sync()
    spec_tflops, _ = spec_for(ctx.gpu_name)
    ms = ctx.timer.ms(gemms, graph) / len(pairs)
    ctx.writer(
        probe_row(ctx, f"gemm_bf16_{n}{label}", ms, 2.0 * n**3, 3.0 * n * n * BYTES_PER_ELEMENT)
        | {"notes": f"spec dense bf16 {spec_tflops:g} TFLOP/s" if spec_tflops else "no spec known"}
    )


def measure_copy(ctx: Context, label: str = "", graph: bool = True) -> None:
    src = torch.randn(ctx.grid.copy_bytes // BYTES_PER_ELEMENT, device=ctx.device, dtype=DTYPE)
    dst = torch.empty_like(src)
    _, spec_gbps = spec_for(ctx.gpu_name)
    ms = ctx.timer.ms(lambda: dst.copy_(src), graph)
    ctx.writer(
        probe_row(ctx, f"copy_d2d{label}", ms, 0.0, 2.0 * ctx.grid.copy_bytes)
        | {"notes": "bytes read + written" + (f"; spec HBM {spec_gbps:g} GB/s" if spec_gbps else "")}
    )


def measure_read(ctx: Context, label: str = "", graph: bool = True) -> None:
    """A sum over a large buffer: HBM bytes read and nothing written, as decode's weight and KV reads."""
    src = torch.randn(ctx.grid.copy_bytes // BYTES_PER_ELEMENT, device=ctx.device, dtype=DTYPE)
    _, spec_gbps = spec_for(ctx.gpu_name)
    ms = ctx.timer.ms(lambda: torch.sum(src, dtype=torch.float32), graph)
    ctx.writer(
        probe_row(ctx, f"read_d2d{label}", ms, 0.0, float(ctx.grid.copy_bytes))
        | {"notes": "bytes read" + (f"; spec HBM {spec_gbps:g} GB/s" if spec_gbps else "")}
    )


def probe_row(ctx: Context, name: str, ms: float, flops: float, nbytes: float) -> dict[str, object]:
    return {
        "gpu_name": ctx.gpu_name,
        "torch_version": torch.__version__,
        "model": name,
        "tp": 1,
        "phase": "probe",
        "batch": 1,
        "layers_timed": 0,
        "n_layers": 0,
        "ms_full_depth": f"{ms:.5f}",
        "flops_full_depth": f"{flops:.6g}",
        "bytes_full_depth": f"{nbytes:.6g}",
        "achieved_tflops": f"{flops / ms / 1e9:.2f}",
        "achieved_gbps": f"{nbytes / ms / 1e6:.1f}",
        "split": "fit",
        "status": "ok",
    }


def spec_for(gpu_name: str) -> tuple[float, float]:
    for key, tflops, gbps in SPECS:
        if key in gpu_name:
            return tflops, gbps
    return 0.0, 0.0


def attention_kernels(device: torch.device, names: tuple[str, ...]) -> dict[str, tuple[AttentionConfig, ...]]:
    """The SDPA kernels among `names` (the reference first) that take each phase's shapes here.

    Prefill: causal with SDPA's own GQA; flash, the reference, expands K/V if it lacks it, the
    others are left out. Decode: the packed GQA layout of `sdpa_decode`, non-causal. On CUDA a
    kernel must also run inside a CUDA graph, as every timing does.
    """
    q = torch.randn(2, 8, 64, 128, device=device, dtype=DTYPE)
    kv = torch.randn(2, 2, 64, 128, device=device, dtype=DTYPE)
    cache = torch.stack((kv, kv))
    packed = torch.randn(2, 2, 4, 128, device=device, dtype=DTYPE)

    def accepts(call: Callable[[], torch.Tensor]) -> bool:
        try:
            call()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                with torch.cuda.graph(torch.cuda.CUDAGraph()):
                    call()
        except RuntimeError:
            return False
        return True

    kernels: dict[str, tuple[AttentionConfig, ...]] = {"prefill": (), "decode": ()}
    for name in names:
        kernel = AttentionConfig(name, functools.partial(sdpa_kernel, KERNELS[name]))
        if accepts(lambda: sdpa_prefill(q, kv, kv, kernel)):  # noqa: B023 (called at once)
            kernels["prefill"] += (kernel,)
        elif name == names[0]:
            kernels["prefill"] += (AttentionConfig(name, kernel.backend, native_gqa=False),)
        if accepts(lambda: sdpa_decode(packed, cache, kernel)):  # noqa: B023 (called at once)
            kernels["decode"] += (kernel,)
    for phase, found in kernels.items():
        if not found or found[0].name != names[0]:
            raise SystemExit(f"the reference attention kernel {names[0]} does not take {phase} shapes here")
    return kernels


def default_out(gpu_name: str) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in gpu_name.lower()).strip("_")
    return Path(os.environ.get("OUT", ".")) / f"calibration_{slug}.csv"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes and grid (CPU smoke run)")
    parser.add_argument("--out", type=Path, help="CSV path (default $OUT/calibration_<gpu>.csv)")
    parser.add_argument("--layers", type=int, default=4, help="layers timed per point (default 4)")
    parser.add_argument("--reps", type=int, default=7, help="timed samples per point; median kept")
    parser.add_argument(
        "--models",
        nargs="*",
        help="models (NAME) or shards (NAME:TP) to measure (default all of the catalog)",
        default=None,
    )
    parser.add_argument(
        "--kernels",
        nargs="+",
        choices=list(KERNELS),
        default=tuple(KERNELS),
        help="SDPA kernels to time, the reference first (default: all; `--kernels flash` is the "
        "method of the first runs)",
    )
    args = parser.parse_args(argv)
    args.kernels = tuple(args.kernels)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.layers < 1 or args.reps < 1:
        print("--layers and --reps must be at least 1", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    if not cuda and not args.quick:
        print("no CUDA device: use --quick for a CPU smoke run", file=sys.stderr)
        return 2
    device = torch.device("cuda" if cuda else "cpu")
    gpu_name = torch.cuda.get_device_name(device) if cuda else "cpu"
    total_memory = torch.cuda.get_device_properties(device).total_memory if cuda else 8 << 30
    models = (TINY,) if args.quick else CATALOG
    if args.models:
        # A model's name takes all its shards, name:tp one.
        known = {m.name for m in models} | {f"{m.name}:{m.tp}" for m in models}
        unknown = set(args.models) - known
        if unknown:
            print(f"unknown models: {sorted(unknown)}", file=sys.stderr)
            return 2
        models = tuple(m for m in models if {m.name, f"{m.name}:{m.tp}"} & set(args.models))
    torch.manual_seed(0)

    out: Path = args.out or default_out(gpu_name)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        csv_writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        csv_writer.writeheader()

        def write(row: dict[str, object]) -> None:
            csv_writer.writerow(row)
            handle.flush()
            print(
                f"{row['model']:>16} tp{row['tp']} {row['phase']:>7} b={row.get('batch', '')!s:>4} "
                f"s={row.get('seq_len', '')!s:>6} {row['status']:>7} "
                f"full={row.get('ms_full_depth', '')!s:>10} ms "
                f"{row.get('achieved_tflops', '')!s:>7} TF/s {row.get('achieved_gbps', '')!s:>8} GB/s",
                flush=True,
            )

        ctx = Context(
            device=device,
            grid=QUICK_GRID if args.quick else FULL_GRID,
            timer=Timer(device, reps=args.reps),
            layers=args.layers,
            memory_budget=int(total_memory * MEMORY_FRACTION),
            kernels=attention_kernels(device, args.kernels),
            gpu_name=gpu_name,
            writer=write,
        )
        kernels = {phase: ", ".join(k.label for k in found) for phase, found in ctx.kernels.items()}
        print(f"{gpu_name}, torch {torch.__version__}, attention kernels: {kernels}", flush=True)
        started = time.perf_counter()
        with torch.inference_mode():
            measure_gemm(ctx)
            measure_copy(ctx)
            measure_copy(ctx, label="_eager", graph=False)
            measure_read(ctx)
            measure_read(ctx, label="_eager", graph=False)
            measure_gemm(ctx, label="_sustained", spin_up_s=SPIN_UP_S)
            measure_gemm(ctx, label="_eager", graph=False)
            for shape in models:
                measure_model(ctx, shape)
                measure_depth_check(ctx, shape)
                if cuda:
                    torch.cuda.empty_cache()
            # Again at the end: a drop against the first would show throttling during the run.
            measure_gemm(ctx, label="_end")
        print(f"done in {time.perf_counter() - started:.0f} s; wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
