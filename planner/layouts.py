"""Replica layouts: which tensor- and pipeline-parallel sizes a role may use on a GPU type.

TP is a power of two within one node that divides the attention heads and either divides the KV
heads or is a multiple of them (vLLM replicates KV heads then); MLA only needs the heads divided.
PP is considered only when no single-node layout holds the model with room for one request's KV
cache: then TP spans the node and PP takes the fewest stages that fit, plus two more (more stages
give more KV cache per replica).
"""

from __future__ import annotations

from dataclasses import dataclass

from tandem.planner import cost
from tandem.planner.calibration import Calibration
from tandem.planner.gpu import GIB, GpuSpec
from tandem.planner.model import ModelShape
from tandem.planner.request import RolePins

EXTRA_PIPELINE_STAGES = 2


@dataclass(frozen=True)
class Layout:
    """One replica's shape on one GPU type, with that GPU's calibration."""

    gpu: GpuSpec
    tp: int
    pp: int
    calibration: Calibration

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    def cost(self, model: ModelShape) -> cost.ReplicaCost:
        """The time model of `model` on this layout."""
        return cost.ReplicaCost(model, self.gpu, self.tp, self.pp, self.calibration)

    def describe(self) -> str:
        return f"{self.gpu.name} TP={self.tp}" + (f" PP={self.pp}" if self.pp > 1 else "")


def tp_invalid_reason(model: ModelShape, tp: int, gpus_per_node: int) -> str | None:
    """Why `tp` cannot shard `model` on nodes of `gpus_per_node` GPUs (None: it can)."""
    if tp > gpus_per_node:
        return f"TP={tp} exceeds the {gpus_per_node} GPUs of a node"
    if model.num_attention_heads % tp:
        return f"TP={tp} does not divide the {model.num_attention_heads} attention heads of {model.name}"
    kv = model.num_kv_heads
    if not model.is_mla and kv % tp and tp % kv:
        return f"TP={tp} neither divides nor is a multiple of the {kv} KV heads of {model.name}"
    return None


def tensor_parallel_sizes(model: ModelShape, gpus_per_node: int) -> list[int]:
    sizes = []
    tp = 1
    while tp <= gpus_per_node:
        if tp_invalid_reason(model, tp, gpus_per_node) is None:
            sizes.append(tp)
        tp *= 2
    return sizes


def candidate_layouts(
    model: ModelShape,
    gpu: GpuSpec,
    calibration: Calibration,
    gpus_per_node: int,
    pins: RolePins,
    min_kv_tokens: int,
    max_num_batched_tokens: int = cost.DEFAULT_MAX_BATCHED_TOKENS,
) -> tuple[list[Layout], str | None]:
    """The layouts worth sizing, or none and the reason."""
    if pins.tensor_parallel is not None:
        reason = tp_invalid_reason(model, pins.tensor_parallel, gpus_per_node)
        if reason:
            return [], f"pinned {reason}"
        sizes = [pins.tensor_parallel]
    else:
        sizes = tensor_parallel_sizes(model, gpus_per_node)
        if not sizes:
            return [], f"no tensor-parallel size up to {gpus_per_node} shards the heads of {model.name}"

    def fits(tp: int, pp: int) -> bool:
        capacity = cost.kv_capacity_tokens(model, gpu, tp, pp, calibration, max_num_batched_tokens)
        return capacity >= min_kv_tokens

    if pins.pipeline_parallel is not None:
        pp = pins.pipeline_parallel
        if pp > model.num_layers:
            return [], f"pinned PP={pp} exceeds the {model.num_layers} layers of {model.name}"
        layouts = [Layout(gpu, tp, pp, calibration) for tp in sizes if fits(tp, pp)]
        return layouts, None if layouts else _no_fit(model, gpu, calibration, max(sizes), pp, min_kv_tokens)
    single_node = [Layout(gpu, tp, 1, calibration) for tp in sizes if fits(tp, 1)]
    if single_node:
        return single_node, None
    tp = max(sizes)
    first = next((pp for pp in range(2, model.num_layers + 1) if fits(tp, pp)), None)
    if first is None:
        return [], _no_fit(model, gpu, calibration, tp, model.num_layers, min_kv_tokens)
    last = min(first + EXTRA_PIPELINE_STAGES, model.num_layers)
    return [Layout(gpu, tp, pp, calibration) for pp in range(first, last + 1)], None


def _no_fit(
    model: ModelShape, gpu: GpuSpec, calibration: Calibration, tp: int, pp: int, kv_tokens: int
) -> str:
    weights = cost.weight_bytes_per_gpu(model, tp, pp) / GIB
    usable = gpu.memory_gib * calibration.gpu_memory_utilization
    return (
        f"{model.name} ({model.weight_bytes() / GIB:.0f} GiB of {model.weight_dtype} weights) does not fit "
        f"{gpu.name}: at TP={tp} x PP={pp} each GPU holds {weights:.1f} GiB of weights of its {usable:.1f} "
        f"usable GiB and has no room left for the KV cache of one {kv_tokens}-token request"
    )
