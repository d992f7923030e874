"""Measure the tensor-parallel all-reduce (PyTorch + NCCL), for the planner's all-reduce fit.

One process per GPU (torch.multiprocessing, rendezvous through a file: no TCP store). For every
TP group size 2..N (a group over the first k ranks, as a TP=k engine on k GPUs of a node), every
message size of a grid (4 KiB to 256 MiB in steps of 2) plus the hidden-state sizes of catalog
models (hidden x tokens x 2 bytes, decode batches and prefill chunks), the bf16 sum all-reduce is
timed two ways:

- `graph`: `iters` all-reduces captured in one CUDA graph, replayed between CUDA events (what
  vLLM's CUDA-graph decode steps see: no host launch cost);
- `eager`: `iters` `dist.all_reduce` calls from Python between CUDA events (eager prefill; for small
  messages it includes the host's launch cost).

`iters` is chosen so that one sample spans at least TARGET_SAMPLE_MS (the group agrees on it);
each sample's per-call time is the slowest rank's, and `ms` is the median of `--reps` samples.
algbw = message / time; busbw = algbw * 2 (tp - 1) / tp (nccl-tests' bus bandwidth, what each GPU
sends over its link in a ring). Every third message size of each (tp, mode) series is `holdout`.

    python3 benchmarks/calibration/allreduce.py --out $OUT/h200_allreduce.csv   # all local GPUs
    python benchmarks/calibration/allreduce.py --backend gloo --quick           # CPU smoke run

NVLink multicast (NVLS) stays off: NCCL_NVLS_ENABLE=0 unless the environment says otherwise (the
planner models a ring all-reduce; and multicast can take shared hosts' GPUs out of service).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DTYPE = torch.bfloat16
BYTES_PER_ELEMENT = 2
TARGET_SAMPLE_MS = 5.0
MAX_ITERS = 1000
WARMUP_CALLS = 5
KIB, MIB = 1 << 10, 1 << 20
GRID = tuple(4 * KIB << i for i in range(17))  # 4 KiB .. 256 MiB
QUICK_GRID = tuple(4 * KIB << (2 * i) for i in range(5))  # 4 KiB .. 1 MiB, x4 steps
# Hidden sizes of catalog models (Qwen2.5-7B, Llama-3.1-8B, 32B-class, Llama-3.1-70B) and the
# tokens of one pass: decode batches and prefill chunks.
HIDDEN_SIZES = (3584, 4096, 5120, 8192)
DECODE_TOKENS = (1, 8, 64, 256)
PREFILL_TOKENS = (4096, 8192)
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}

COLUMNS = (
    "gpu_name",
    "torch_version",
    "nccl_version",
    "world_size",
    "tp",
    "mode",
    "message_bytes",
    "ms",
    "algbw_gbps",
    "busbw_gbps",
    "split",
    "notes",
)


def model_messages() -> dict[int, list[str]]:
    """Message bytes of one layer's all-reduce for each catalog hidden size and pass, with labels."""
    labels: dict[int, list[str]] = {}
    for phase, token_counts in (("decode", DECODE_TOKENS), ("prefill", PREFILL_TOKENS)):
        for hidden in HIDDEN_SIZES:
            for tokens in token_counts:
                message = hidden * tokens * BYTES_PER_ELEMENT
                labels.setdefault(message, []).append(f"{phase} {hidden}x{tokens}")
    return labels


def message_sizes(quick: bool) -> tuple[list[int], dict[int, str]]:
    """The sorted message sizes to time, and the model shapes each one matches."""
    if quick:
        return list(QUICK_GRID), {}
    labels = model_messages()
    sizes = sorted(set(GRID) | set(labels))
    return sizes, {size: " ".join(names) for size, names in labels.items()}


def split_for(index: int) -> str:
    """Every third size of a (tp, mode) series, in size order, is held out of the fit."""
    return "holdout" if index % 3 == 2 else "fit"


def busbw_factor(tp: int) -> float:
    """Bytes each GPU sends in a ring all-reduce, per message byte."""
    return 2 * (tp - 1) / tp


@dataclass(frozen=True)
class Settings:
    backend: str
    world_size: int
    reps: int
    quick: bool
    out: Path
    init_file: str


class Group:
    """One TP group: its collectives and a timer that the whole group agrees on."""

    def __init__(self, ranks: Sequence[int], settings: Settings, rank: int) -> None:
        self.process_group = dist.new_group(list(ranks))
        self.size = len(ranks)
        self.member = rank in ranks
        self.cuda = settings.backend == "nccl"
        self.device = torch.device("cuda", rank) if self.cuda else torch.device("cpu")

    def all_reduce(self, tensor: torch.Tensor) -> None:
        dist.all_reduce(tensor, group=self.process_group)

    def slowest(self, values: Sequence[float]) -> list[float]:
        """Element-wise max of `values` over the group's ranks."""
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.process_group)
        return [float(v) for v in tensor.tolist()]

    def sync(self) -> None:
        """Every rank has finished its queued work, and the group has met (so samples start together)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
        dist.barrier(group=self.process_group, **({"device_ids": [self.device.index]} if self.cuda else {}))
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def elapsed_ms(self, run: Callable[[], object]) -> float:
        """Time of `run()` on this rank: CUDA events on a GPU, the wall clock on the CPU."""
        if not self.cuda:
            start = time.perf_counter()
            run()
            return (time.perf_counter() - start) * 1e3
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        run()
        end.record()
        end.synchronize()
        return float(begin.elapsed_time(end))


def calls(group: Group, tensor: torch.Tensor, count: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(count):
            group.all_reduce(tensor)

    return run


def iterations(group: Group, tensor: torch.Tensor) -> int:
    """Calls per sample so one sample spans TARGET_SAMPLE_MS; the same on every rank of the group."""
    group.sync()
    estimate = group.elapsed_ms(calls(group, tensor, WARMUP_CALLS)) / WARMUP_CALLS
    (slowest,) = group.slowest([estimate])
    return max(1, min(MAX_ITERS, math.ceil(TARGET_SAMPLE_MS / max(slowest, 1e-4))))


def time_mode(group: Group, tensor: torch.Tensor, mode: str, reps: int) -> float:
    """Median over `reps` samples of the per-call time (ms) of the group's slowest rank."""
    iters = iterations(group, tensor)
    run = calls(group, tensor, iters)
    if mode == "graph":
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        run = graph.replay
        run()  # the first replay uploads the graph
    samples = []
    for _ in range(reps):
        group.sync()
        samples.append(group.elapsed_ms(run) / iters)
    return statistics.median(group.slowest(samples))


def check_sum(group: Group) -> None:
    """One all-reduce of ones gives the group size everywhere (bf16 holds small integers exactly)."""
    ones = torch.ones(MIB // BYTES_PER_ELEMENT, dtype=DTYPE, device=group.device)
    group.all_reduce(ones)
    if not bool((ones == group.size).all()):
        raise RuntimeError(f"all-reduce over {group.size} ranks gave a wrong sum")


def worker(rank: int, settings: Settings) -> None:
    cuda = settings.backend == "nccl"
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group(
        settings.backend,
        init_method=f"file://{settings.init_file}",
        rank=rank,
        world_size=settings.world_size,
        **({"device_id": torch.device("cuda", rank)} if cuda else {}),
    )
    sizes, labels = message_sizes(settings.quick)
    modes = ("graph", "eager") if cuda else ("eager",)
    device = torch.device("cuda", rank) if cuda else torch.device("cpu")
    # Zeros: repeated in-place sums stay finite. Each message is a prefix of one buffer.
    buffer = torch.zeros(max(sizes) // BYTES_PER_ELEMENT, dtype=DTYPE, device=device)
    # Every rank takes part in creating every group, members or not.
    groups = [Group(range(tp), settings, rank) for tp in range(2, settings.world_size + 1)]
    writer = Writer(settings) if rank == 0 else None
    for group in groups:
        if group.member:
            check_sum(group)
            for mode in modes:
                for index, size in enumerate(sizes):
                    ms = time_mode(group, buffer[: size // BYTES_PER_ELEMENT], mode, settings.reps)
                    if writer:
                        writer.row(group.size, mode, size, ms, split_for(index), labels.get(size, ""))
        dist.barrier()
    if writer:
        writer.close()
    dist.destroy_process_group()


class Writer:
    """Rank 0's CSV, one row per timed point, flushed as it goes."""

    def __init__(self, settings: Settings) -> None:
        cuda = settings.backend == "nccl"
        self.common = {
            "gpu_name": torch.cuda.get_device_name() if cuda else "cpu",
            "torch_version": torch.__version__,
            "nccl_version": ".".join(map(str, torch.cuda.nccl.version())) if cuda else "",
            "world_size": settings.world_size,
        }
        settings.out.parent.mkdir(parents=True, exist_ok=True)
        self.handle = settings.out.open("w", newline="")
        self.csv = csv.DictWriter(self.handle, fieldnames=COLUMNS)
        self.csv.writeheader()
        print(", ".join(f"{k} {v}" for k, v in self.common.items()), flush=True)

    def row(self, tp: int, mode: str, size: int, ms: float, split: str, notes: str) -> None:
        algbw = size / (ms * 1e6)  # GB/s
        busbw = algbw * busbw_factor(tp)
        self.csv.writerow(
            {
                **self.common,
                "tp": tp,
                "mode": mode,
                "message_bytes": size,
                "ms": f"{ms:.5f}",
                "algbw_gbps": f"{algbw:.2f}",
                "busbw_gbps": f"{busbw:.2f}",
                "split": split,
                "notes": notes,
            }
        )
        self.handle.flush()
        print(
            f"tp{tp} {mode:>5} {size:>10} B {ms * 1e3:>10.1f} us  algbw {algbw:7.1f}  busbw {busbw:7.1f} GB/s"
            f"  {split:<7} {notes}",
            flush=True,
        )

    def close(self) -> None:
        self.handle.close()
        print(f"wrote {self.handle.name}", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--backend", choices=("nccl", "gloo"), default="nccl")
    parser.add_argument("--nproc", type=int, help="processes (default: every GPU; 3 with gloo)")
    parser.add_argument("--reps", type=int, default=15, help="samples per point; median kept")
    parser.add_argument("--quick", action="store_true", help="a few sizes (CPU smoke run)")
    parser.add_argument("--out", type=Path, help="CSV path (default $OUT/allreduce.csv)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.backend == "nccl" and not torch.cuda.is_available():
        print("no CUDA device: use --backend gloo --quick for a CPU smoke run", file=sys.stderr)
        return 2
    nproc = args.nproc or (torch.cuda.device_count() if args.backend == "nccl" else 3)
    if nproc < 2 or args.reps < 1:
        print("need at least 2 processes and 1 rep", file=sys.stderr)
        return 2
    if args.backend == "nccl" and nproc > torch.cuda.device_count():
        print(f"--nproc {nproc}: only {torch.cuda.device_count()} GPUs", file=sys.stderr)
        return 2
    for name, value in SAFE_ENV.items():
        os.environ.setdefault(name, value)
    if args.backend == "gloo":
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the smoke run stays on loopback
    print(" ".join(f"{name}={os.environ[name]}" for name in SAFE_ENV), flush=True)
    out: Path = args.out or Path(os.environ.get("OUT", ".")) / "allreduce.csv"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as rendezvous:
        settings = Settings(
            backend=args.backend,
            world_size=nproc,
            reps=args.reps,
            quick=args.quick,
            out=out,
            init_file=str(Path(rendezvous) / "init"),
        )
        mp.spawn(worker, args=(settings,), nprocs=nproc, join=True)
    print(f"done in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
