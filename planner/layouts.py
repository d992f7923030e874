"""Replica layouts: which tensor- and pipeline-parallel sizes a role may use on a GPU type.

TP is a power of two within one node that divides the attention heads and either divides the KV
heads or is a multiple of them (vLLM replicates KV heads then); MLA only needs the heads divided.
PP is considered only when no single-node layout holds the model with room for one request's KV
cache: then TP spans the node and PP takes the fewest stages that fit, plus two more (more stages
give more KV cache per replica). A request that needs single-stage replicas (the LMCache connector)
gets no PP layouts, and the reason says why.

An MoE model also gets data-parallel attention layouts (one stage): DP ranks of TP GPUs, the routed
experts over all DP x TP GPUs, whole per GPU (expert parallel, EP; DP x TP must divide the experts)
with each all-to-all backend, or sliced (no EP, within one node: vLLM's default when DP > 1 and
`--enable-expert-parallel` is off); and EP over a TP group alone (DP 1). Replicas span at most
MAX_REPLICA_NODES nodes (and the GPU budget). See tandem.planner.moe.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from tandem.planner import cost
from tandem.planner.calibration import Calibration
from tandem.planner.cost import DEFAULT_MAX_BATCHED_TOKENS
from tandem.planner.gpu import GIB, GpuSpec
from tandem.planner.model import ModelShape
from tandem.planner.moe import ALL2ALL_BACKENDS, Phase
from tandem.planner.request import RolePins

EXTRA_PIPELINE_STAGES = 2
# The widest data-parallel replica searched, in nodes (published wide-EP decode runs EP 72-320;
# a pool here rarely holds that many nodes, and each doubling adds layouts to size).
MAX_REPLICA_NODES = 4
SLICED_EXPERTS = "allgather_reducescatter"  # the backend of DP with TP-sliced experts


@dataclass(frozen=True)
class Layout:
    """One replica's shape on one GPU type, with that GPU's calibration."""

    gpu: GpuSpec
    tp: int
    pp: int
    calibration: Calibration
    dp: int = 1  # data-parallel attention ranks (engines) of tp GPUs each
    ep: bool = False  # routed experts whole per GPU (--enable-expert-parallel)
    all2all: str | None = None  # --all2all-backend, with dp > 1
    gpus_per_node: int = 8

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def parallel_batches(self) -> int:
        """Batches the replica runs at once: PP micro-batches times DP ranks."""
        return self.pp * self.dp

    @property
    def nodes(self) -> int:
        return math.ceil(self.gpus / self.gpus_per_node)

    @property
    def dp_local(self) -> int:
        """DP ranks on one node (--data-parallel-size-local)."""
        return min(self.dp, max(1, self.gpus_per_node // self.tp))

    @property
    def buffer_gib(self) -> float:
        return ALL2ALL_BACKENDS[self.all2all].buffer_gib if self.all2all else 0.0

    def cost(self, model: ModelShape) -> cost.ReplicaCost:
        """The time model of `model` on this layout."""
        return cost.ReplicaCost(
            model,
            self.gpu,
            self.tp,
            self.pp,
            self.calibration,
            dp=self.dp,
            ep=self.ep,
            all2all=self.all2all,
            gpus_per_node=self.gpus_per_node,
        )

    def kv_capacity_tokens(
        self, model: ModelShape, max_num_batched_tokens: int = DEFAULT_MAX_BATCHED_TOKENS
    ) -> int:
        """KV cache tokens of one engine: the replica, or with DP one of its ranks."""
        return cost.kv_capacity_tokens(
            model,
            self.gpu,
            self.tp,
            self.pp,
            self.calibration,
            max_num_batched_tokens,
            dp=self.dp,
            buffer_gib=self.buffer_gib,
        )

    def serves(self, phase: Phase) -> bool:
        """Whether the layout's all-to-all backend is made for `phase`."""
        return self.all2all is None or phase in ALL2ALL_BACKENDS[self.all2all].phases

    def describe(self) -> str:
        text = f"{self.gpu.name} TP={self.tp}" + (f" PP={self.pp}" if self.pp > 1 else "")
        if self.dp > 1:
            text += f" DP={self.dp}"
        if self.ep:
            text += f" EP={self.dp * self.tp}"
        return text + (f" ({self.all2all})" if self.all2all else "")


def for_phase(layouts: Sequence[Layout], phase: Phase) -> list[Layout]:
    return [layout for layout in layouts if layout.serves(phase)]


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
    *,
    single_stage: str | None = None,
    expert_parallel: str | None = None,
    max_gpus: int | None = None,
) -> tuple[list[Layout], str | None]:
    """The layouts worth sizing, or none and the reason. `single_stage`: why replicas must have
    one pipeline stage (None: they may have several). `expert_parallel`: why an MoE model gets no
    DP/EP layouts (None: it does); `max_gpus`: the most GPUs one replica may take. Pinned DP and EP
    keep the layouts that have them."""

    def fits(tp: int, pp: int) -> bool:
        capacity = cost.kv_capacity_tokens(model, gpu, tp, pp, calibration, max_num_batched_tokens)
        return capacity >= min_kv_tokens

    def search() -> tuple[list[Layout], str | None]:
        if pins.tensor_parallel is not None:
            reason = tp_invalid_reason(model, pins.tensor_parallel, gpus_per_node)
            if reason:
                return [], f"pinned {reason}"
            sizes = [pins.tensor_parallel]
        else:
            sizes = tensor_parallel_sizes(model, gpus_per_node)
            if not sizes:
                return [], f"no tensor-parallel size up to {gpus_per_node} shards the heads of {model.name}"
        wide: list[Layout] = []
        if model.is_moe and expert_parallel is None and (pins.pipeline_parallel or 1) == 1:
            limit = min(MAX_REPLICA_NODES * gpus_per_node, max_gpus or MAX_REPLICA_NODES * gpus_per_node)
            expert = _expert_layouts(model, gpu, calibration, gpus_per_node, sizes, limit)
            wide = _holding(model, expert, min_kv_tokens, max_num_batched_tokens)
        if pins.pipeline_parallel is not None:
            pp = pins.pipeline_parallel
            if pp > 1 and single_stage:
                return [], f"pinned PP={pp}: {single_stage}"
            if pp > model.num_layers:
                return [], f"pinned PP={pp} exceeds the {model.num_layers} layers of {model.name}"
            staged = [Layout(gpu, tp, pp, calibration) for tp in sizes if fits(tp, pp)] + wide
            return staged, None if staged else _no_fit(model, gpu, calibration, max(sizes), pp, min_kv_tokens)
        single_node = [Layout(gpu, tp, 1, calibration) for tp in sizes if fits(tp, 1)]
        if single_node:
            return single_node + wide, None
        tp = max(sizes)
        if single_stage:
            if wide:
                return wide, None
            return [], f"{_no_fit(model, gpu, calibration, tp, 1, min_kv_tokens)}, and {single_stage}"
        first = next((pp for pp in range(2, model.num_layers + 1) if fits(tp, pp)), None)
        if first is None:
            return wide, None if wide else _no_fit(
                model, gpu, calibration, tp, model.num_layers, min_kv_tokens
            )
        last = min(first + EXTRA_PIPELINE_STAGES, model.num_layers)
        return [Layout(gpu, tp, pp, calibration) for pp in range(first, last + 1)] + wide, None

    layouts, reason = search()
    if pins.data_parallel is None and pins.expert_parallel is None:
        return layouts, reason
    kept = [layout for layout in layouts if pins.admits(layout.dp, layout.ep)]
    if kept:
        return kept, None
    wanted = ", ".join(
        f"{name}={value}"
        for name, value in (("DP", pins.data_parallel), ("EP", pins.expert_parallel))
        if value is not None
    )
    why = reason or (expert_parallel if model.is_moe else f"{model.name} is not an MoE model")
    return [], f"pinned {wanted}: {why or 'no layout that fits has it'}"


def _holding(
    model: ModelShape, layouts: Iterable[Layout], min_kv_tokens: int, max_num_batched_tokens: int
) -> list[Layout]:
    """The layouts with room for `min_kv_tokens` of KV cache per engine. Their capacity depends
    on TP, PP, DP and the all-to-all buffers alone: worked out once for the layouts that share them
    (the backends and expert placements of one DP x TP shape)."""
    capacities: dict[tuple[int, int, int, float], int] = {}
    held = []
    for layout in layouts:
        shape = (layout.tp, layout.pp, layout.dp, layout.buffer_gib)
        if shape not in capacities:
            capacities[shape] = layout.kv_capacity_tokens(model, max_num_batched_tokens)
        if capacities[shape] >= min_kv_tokens:
            held.append(layout)
    return held


def _expert_layouts(
    model: ModelShape,
    gpu: GpuSpec,
    calibration: Calibration,
    gpus_per_node: int,
    sizes: Sequence[int],
    limit: int,
) -> Iterator[Layout]:
    """DP x TP layouts of an MoE model up to `limit` GPUs, and EP over a TP group alone."""
    ep_backends = [name for name, backend in ALL2ALL_BACKENDS.items() if backend.needs_ep]
    for tp in sizes:
        if tp > 1 and model.num_experts % tp == 0:
            yield Layout(gpu, tp, 1, calibration, ep=True, gpus_per_node=gpus_per_node)
        dp = 2
        while dp * tp <= limit:
            if model.num_experts % (dp * tp) == 0:
                for backend in (SLICED_EXPERTS, *ep_backends):
                    yield Layout(gpu, tp, 1, calibration, dp, True, backend, gpus_per_node)
            if dp * tp <= gpus_per_node:
                yield Layout(gpu, tp, 1, calibration, dp, False, SLICED_EXPERTS, gpus_per_node)
            dp *= 2


def _no_fit(
    model: ModelShape, gpu: GpuSpec, calibration: Calibration, tp: int, pp: int, kv_tokens: int
) -> str:
    weights = cost.weight_bytes_per_gpu(model, tp, pp) / GIB
    usable = gpu.memory_gib * calibration.gpu_memory_utilization
    return (
        f"{model.name} ({model.weight_bytes() / GIB:.0f} GiB of {model.weight_dtype} weights) does not fit "
        f"{gpu.name}: at TP={tp} x PP={pp} each GPU holds {weights:.1f} GiB of weights of its {usable:.1f} "
        f"usable GiB and has no room left for the KV cache of one {kv_tokens}-token sequence (the "
        "engine's context, spec.model.maxModelLen else the model's: vLLM starts only with room for one)"
    )
