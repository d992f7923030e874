"""Measure what one GPU does in an MoE layer, for the planner's expert-parallel terms.

Three kernels of one MoE layer on one GPU, with the per-GPU shapes of expert-parallel (EP) and
tensor-parallel (TP) layouts of catalog models:

- `experts`: the routed experts' MLP as grouped GEMMs (`torch._grouped_mm`, CUTLASS on Hopper):
  gate/up [E, 2w, h], SiLU x up, down [E, h, w], over tokens sorted by expert. Per (shape,
  tokens per expert m) two routings: `uniform` (every local expert gets m rows) and `random` (the
  rows of E x m token-expert picks drawn uniformly over the experts, as a balanced router gives:
  some experts get none, some more). Weight bytes read are those of the experts with rows.
  `--fp8` adds FP8 (e4m3, row-wise scales) through `torch._scaled_grouped_mm` where it runs.
- `permute` / `unpermute`: the local dispatch/combine memory traffic around the experts: gathering
  each token's hidden state once per pick into expert order (T x k rows written), and the weighted
  sum of the k expert outputs back into T rows.
- `router`: the gate GEMM [T, h] x [h, E], softmax and top-k.

Each point is timed as `inner` calls captured in one CUDA graph (what vLLM's graph-captured decode
steps run), replayed between CUDA events; `ms` is the median of `--reps` samples per call. Weights
of a point (0.4-3 GB) are far beyond the 60 MB L2. On a machine without CUDA the script runs the
same code eagerly on the CPU (`--quick`, a smoke test of the script only).

    python3 benchmarks/calibration/moe.py --out $OUT/h200_moe.csv --fp8
    python benchmarks/calibration/moe.py --quick --out /tmp/moe.csv        # CPU smoke run
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

TARGET_SAMPLE_MS = 3.0
MAX_INNER = 200


@dataclass(frozen=True)
class ExpertShape:
    """The routed experts one GPU holds in one layout: `experts` local experts of width `width`."""

    name: str
    hidden: int
    width: int
    experts: int
    top_k: int


# DeepSeek-V3 (h 7168, expert width 2048, 256 experts, top-8) at EP 8, 16, 32 and TP 8 (every
# expert sliced to 2048 / 8 = 256); Qwen3-30B-A3B (h 2048, width 768, 128 experts, top-8) whole
# on one GPU; Qwen3-235B-A22B (h 4096, width 1536, 128 experts, top-8) at EP 8.
SHAPES = (
    ExpertShape("deepseek-v3 ep8", 7168, 2048, 32, 8),
    ExpertShape("deepseek-v3 ep16", 7168, 2048, 16, 8),
    ExpertShape("deepseek-v3 ep32", 7168, 2048, 8, 8),
    ExpertShape("deepseek-v3 tp8", 7168, 256, 256, 8),
    ExpertShape("qwen3-30b-a3b ep1", 2048, 768, 128, 8),
    ExpertShape("qwen3-235b-a22b ep8", 4096, 1536, 16, 8),
)
QUICK_SHAPES = (ExpertShape("tiny", 64, 32, 8, 2),)
TOKENS_PER_EXPERT = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
QUICK_TOKENS_PER_EXPERT = (1, 4, 16)
MAX_ROWS = 65536
PERMUTE_TOKENS = (16, 64, 256, 1024, 4096, 16384)
QUICK_PERMUTE_TOKENS = (16, 64)
ROUTER = (("deepseek-v3", 7168, 256, 8), ("qwen3-30b-a3b", 2048, 128, 8))
QUICK_ROUTER = (("tiny", 64, 8, 2),)

COLUMNS = (
    "gpu_name", "torch", "kind", "dtype", "shape", "hidden", "width", "experts", "top_k", "routing",
    "rows", "tokens_per_expert", "active_experts", "weight_bytes", "moved_bytes", "flops", "ms",
    "weight_tb_per_s", "moved_tb_per_s", "tflops", "notes",
)  # fmt: skip


class Timer:
    """Median time per call of a function: CUDA graphs and events on a GPU, perf_counter on a CPU."""

    def __init__(self, device: torch.device, reps: int) -> None:
        self.device, self.reps = device, reps

    def ms(self, run: Callable[[], object]) -> tuple[float, str]:
        for _ in range(3):
            run()
        if self.device.type != "cuda":
            return self._host_ms(run), "eager on the CPU"
        once = self._event_ms(run, 1)
        inner = max(1, min(MAX_INNER, round(TARGET_SAMPLE_MS / max(once, 1e-3))))
        try:
            graph = self._capture(run, inner)
        except RuntimeError as exc:
            samples = [self._event_ms(run, inner) / inner for _ in range(self.reps)]
            return statistics.median(samples), f"eager (graph capture failed: {str(exc)[:80]})"
        samples = [self._event_ms(graph.replay, 1) / inner for _ in range(self.reps)]
        return statistics.median(samples), f"graph of {inner} calls"

    def _capture(self, run: Callable[[], object], inner: int) -> torch.cuda.CUDAGraph:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            run()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(inner):
                run()
        graph.replay()
        torch.cuda.synchronize()
        return graph

    @staticmethod
    def _event_ms(run: Callable[[], object], calls: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            run()
        end.record()
        torch.cuda.synchronize()
        return float(start.elapsed_time(end))

    def _host_ms(self, run: Callable[[], object]) -> float:
        samples = []
        for _ in range(self.reps):
            begin = time.perf_counter()
            run()
            samples.append((time.perf_counter() - begin) * 1000)
        return statistics.median(samples)


class Writer:
    def __init__(self, path: Path, device: torch.device) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("w", newline="")
        self.csv = csv.DictWriter(self.file, COLUMNS)
        self.csv.writeheader()
        self.gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"

    def row(self, **values: object) -> None:
        ms = float(values["ms"])  # type: ignore[arg-type]
        per_s = 1e-9 / ms  # bytes per ms -> TB/s
        weight, moved, flops = (float(values.get(k, 0)) for k in ("weight_bytes", "moved_bytes", "flops"))  # type: ignore[arg-type]
        full = {
            "gpu_name": self.gpu,
            "torch": torch.__version__,
            **values,
            "ms": f"{ms:.5f}",
            "weight_tb_per_s": f"{weight * per_s:.3f}",
            "moved_tb_per_s": f"{moved * per_s:.3f}",
            "tflops": f"{flops * per_s:.1f}",
        }
        self.csv.writerow({k: full.get(k, "") for k in COLUMNS})
        self.file.flush()
        print(
            " ".join(
                f"{k}={full[k]}" for k in ("kind", "dtype", "shape", "routing", "rows", "ms") if k in full
            )
        )


def expert_counts(shape: ExpertShape, per_expert: int, routing: str, generator: torch.Generator) -> list[int]:
    """Rows per local expert: m each, or E x m picks drawn uniformly over the E experts."""
    if routing == "uniform":
        return [per_expert] * shape.experts
    picks = torch.randint(0, shape.experts, (shape.experts * per_expert,), generator=generator)
    return torch.bincount(picks, minlength=shape.experts).tolist()


def measure_experts(
    shape: ExpertShape, timer: Timer, out: Writer, device: torch.device, quick: bool, fp8: bool
) -> None:
    h, w, e = shape.hidden, shape.width, shape.experts
    dtype = torch.bfloat16
    w13 = torch.randn(e, 2 * w, h, device=device, dtype=dtype) * 0.02
    w2 = torch.randn(e, h, w, device=device, dtype=dtype) * 0.02
    expert_bytes = 3 * h * w * 2
    generator = torch.Generator().manual_seed(0)
    fp8_weights = _fp8_weights(w13, w2) if fp8 else None
    for per_expert in QUICK_TOKENS_PER_EXPERT if quick else TOKENS_PER_EXPERT:
        if per_expert * e > MAX_ROWS:
            continue
        for routing in ("uniform", "random"):
            counts = expert_counts(shape, per_expert, routing, generator)
            rows = sum(counts)
            offs = torch.tensor(counts, device=device, dtype=torch.int32).cumsum(0, dtype=torch.int32)
            x = torch.randn(rows, h, device=device, dtype=dtype)
            active = sum(1 for c in counts if c)
            common = {
                "shape": shape.name, "hidden": h, "width": w, "experts": e, "top_k": shape.top_k,
                "routing": routing, "rows": rows, "tokens_per_expert": per_expert, "active_experts": active,
                "flops": 2 * rows * 3 * h * w, "moved_bytes": rows * h * 2 * 2,
            }  # fmt: skip

            def bf16_run(x: torch.Tensor = x, offs: torch.Tensor = offs) -> torch.Tensor:
                gate_up = torch._grouped_mm(x, w13.transpose(-2, -1), offs=offs)
                return torch._grouped_mm(_swiglu(gate_up, w), w2.transpose(-2, -1), offs=offs)

            _check(bf16_run(), rows, h)
            ms, notes = timer.ms(bf16_run)
            out.row(
                kind="experts",
                dtype="bfloat16",
                weight_bytes=active * expert_bytes,
                ms=ms,
                notes=notes,
                **common,
            )
            if fp8_weights is not None:
                ms8, notes8 = _fp8_ms(fp8_weights, x, offs, w, timer)
                if ms8 is not None:
                    out.row(
                        kind="experts",
                        dtype="fp8",
                        weight_bytes=active * expert_bytes // 2,
                        ms=ms8,
                        notes=notes8,
                        **common,
                    )
                else:
                    print(f"fp8 grouped GEMM skipped: {notes8}")
                    fp8_weights = None


def _swiglu(gate_up: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.silu(gate_up[:, :width]) * gate_up[:, width:]


def _check(y: torch.Tensor, rows: int, hidden: int) -> None:
    if y.shape != (rows, hidden) or not bool(torch.isfinite(y).all()):
        raise SystemExit(f"grouped GEMM gave {tuple(y.shape)} (finite: {bool(torch.isfinite(y).all())})")


FP8 = getattr(torch, "float8_e4m3fn", None)


def _fp8_weights(w13: torch.Tensor, w2: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
    """Row-wise scaled e4m3 copies of the weights (per expert, per output row)."""
    if FP8 is None or w13.device.type != "cuda":
        return None
    quantised = []
    for weight in (w13, w2):
        scale = weight.abs().amax(dim=-1).float() / 448.0  # [E, N]
        quantised += [(weight / scale[..., None].to(weight.dtype)).to(FP8), scale]
    return tuple(quantised)


def _fp8_ms(
    weights: tuple[torch.Tensor, ...], x: torch.Tensor, offs: torch.Tensor, width: int, timer: Timer
) -> tuple[float | None, str]:
    q13, s13, q2, s2 = weights
    rows = x.shape[0]
    xq = x.to(FP8)
    x_scale = torch.ones(rows, device=x.device, dtype=torch.float32)

    def run() -> torch.Tensor:
        gate_up = torch._scaled_grouped_mm(
            xq, q13.transpose(-2, -1), x_scale, s13, offs=offs, out_dtype=torch.bfloat16
        )
        act = _swiglu(gate_up, width).to(FP8)
        return torch._scaled_grouped_mm(
            act, q2.transpose(-2, -1), x_scale, s2, offs=offs, out_dtype=torch.bfloat16
        )

    try:
        y = run()
        torch.cuda.synchronize()
    except (RuntimeError, TypeError, NotImplementedError) as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:160]}"
    if not bool(torch.isfinite(y).all()):
        return None, "non-finite output"
    ms, notes = timer.ms(run)
    return ms, notes + "; activations cast to e4m3 between the GEMMs"


def measure_permute(timer: Timer, out: Writer, device: torch.device, quick: bool) -> None:
    hidden, top_k, experts = (64, 2, 8) if quick else (7168, 8, 256)
    generator = torch.Generator().manual_seed(1)
    for tokens in QUICK_PERMUTE_TOKENS if quick else PERMUTE_TOKENS:
        x = torch.randn(tokens, hidden, device=device, dtype=torch.bfloat16)
        picks = torch.randint(0, experts, (tokens * top_k,), generator=generator).to(device)
        order = torch.argsort(picks, stable=True)
        source = (order // top_k).contiguous()  # the token each sorted row copies
        weights = torch.rand(tokens, 1, top_k, device=device, dtype=torch.bfloat16)
        expert_out = torch.randn(tokens * top_k, hidden, device=device, dtype=torch.bfloat16)
        row_bytes = hidden * 2
        common = {
            "dtype": "bfloat16",
            "shape": f"h{hidden} k{top_k}",
            "hidden": hidden,
            "top_k": top_k,
            "rows": tokens,
            "experts": experts,
        }

        def permute(x: torch.Tensor = x, source: torch.Tensor = source) -> torch.Tensor:
            return x.index_select(0, source)

        def unpermute(
            y: torch.Tensor = expert_out, w: torch.Tensor = weights, tokens: int = tokens
        ) -> torch.Tensor:
            return torch.bmm(w, y.view(tokens, top_k, hidden))

        ms, notes = timer.ms(permute)
        out.row(kind="permute", moved_bytes=tokens * row_bytes * (1 + top_k), ms=ms, notes=notes, **common)
        ms, notes = timer.ms(unpermute)
        out.row(kind="unpermute", moved_bytes=tokens * row_bytes * (1 + top_k), ms=ms, notes=notes, **common)


def measure_router(timer: Timer, out: Writer, device: torch.device, quick: bool) -> None:
    for name, hidden, experts, top_k in QUICK_ROUTER if quick else ROUTER:
        gate = torch.randn(hidden, experts, device=device, dtype=torch.bfloat16) * 0.02
        for tokens in QUICK_PERMUTE_TOKENS if quick else PERMUTE_TOKENS:
            x = torch.randn(tokens, hidden, device=device, dtype=torch.bfloat16)

            def route(
                x: torch.Tensor = x, gate: torch.Tensor = gate, top_k: int = top_k
            ) -> tuple[torch.Tensor, torch.Tensor]:
                scores = torch.softmax((x @ gate).float(), dim=-1)
                return torch.topk(scores, top_k, dim=-1)

            ms, notes = timer.ms(route)
            out.row(
                kind="router", dtype="bfloat16", shape=name, hidden=hidden, experts=experts, top_k=top_k,
                rows=tokens, flops=2 * tokens * hidden * experts, weight_bytes=hidden * experts * 2,
                ms=ms, notes=notes,
            )  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="CSV path")
    parser.add_argument("--reps", type=int, default=9, help="samples per point; median kept")
    parser.add_argument("--quick", action="store_true", help="tiny shapes (CPU smoke run)")
    parser.add_argument("--fp8", action="store_true", help="also time FP8 grouped GEMMs")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    timer = Timer(device, args.reps)
    out = Writer(args.out, device)
    print(f"device {out.gpu}, torch {torch.__version__}")
    for shape in QUICK_SHAPES if args.quick else SHAPES:
        measure_experts(shape, timer, out, device, args.quick, args.fp8)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    measure_permute(timer, out, device, args.quick)
    measure_router(timer, out, device, args.quick)
    out.file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
