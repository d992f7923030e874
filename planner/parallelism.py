"""Why an MoE role runs expert-parallel, or not: the chosen layout against the best of the other
family (tensor parallelism alone, or data-parallel attention with experts spread over DP x TP),
in the terms the choice turned on: GPUs, then KV cache and sequences per GPU, then latency."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from tandem.planner.layouts import Layout
from tandem.planner.sizing import Outcome, Sized, best

# (role, chosen outcome, best tensor-parallel-only outcome)
RoleChoice = tuple[str, Outcome, Outcome]


def is_wide(layout: Layout) -> bool:
    return layout.dp > 1 or layout.ep


def size_widening(size: Callable[[Sequence[Layout]], Outcome], layouts: Sequence[Layout]) -> Outcome:
    """`size` over the tensor-parallel layouts first, then over the DP/EP layouts whose one replica
    takes no more GPUs than that sizing in all: a larger replica cannot win on GPUs (the first
    rule of the choice), and sizing it is most of a plan's time for a small MoE model."""
    narrow = [layout for layout in layouts if not is_wide(layout)]
    outcome = size(narrow) if narrow else None
    limit = outcome.gpus if isinstance(outcome, Sized) else math.inf
    wider = [layout for layout in layouts if is_wide(layout) and layout.gpus <= limit]
    if not wider:
        return outcome if outcome is not None else size([])
    return best([size(wider)] + ([outcome] if outcome is not None else []))


def _per_gpu(sized: Sized) -> str:
    layout = sized.layout
    kv = sized.kv_capacity * layout.dp / layout.gpus
    latency = (
        f"ITL {sized.predicted_itl_ms:.1f} ms"
        if sized.predicted_itl_ms is not None
        else f"TTFT {sized.predicted_ttft_ms:.0f} ms"
    )
    return (
        f"{kv / 1000:.0f}k KV tokens and {sized.max_sequences / layout.gpus:.1f} sequences per GPU, "
        f"{sized.replica_rps / layout.gpus:.3f} requests/s per GPU, {latency}"
    )


def explain(choices: list[RoleChoice], mla: bool) -> str:
    """One sentence per role whose choice between the two families was open."""
    parts = []
    for role, chosen, tp_only in choices:
        if not isinstance(chosen, Sized):
            continue
        layout = chosen.layout
        if not is_wide(layout):
            parts.append(
                f"{role.capitalize()} stays tensor-parallel ({layout.describe()}): no data- or "
                f"expert-parallel layout needs fewer GPUs or costs less."
            )
            continue
        if isinstance(tp_only, Sized):
            against = (
                f"the best tensor-parallel layout, {chosen_count(tp_only)}, needs {tp_only.gpus} "
                f"({_per_gpu(tp_only)})"
            )
        else:
            against = f"no tensor-parallel layout meets the targets ({tp_only.reason})"
        if layout.dp == 1:
            attention = "whole experts per GPU, no expert sliced across the TP group"
        elif mla:
            attention = (
                "each DP rank decodes its own batch from its own KV cache, and the MLA latent, "
                "which TP copies to every rank, is held once per rank"
            )
        else:
            attention = "each DP rank runs its own batch and KV cache; the experts span all its GPUs"
        parts.append(
            f"{role.capitalize()} runs {chosen_count(chosen)} on {chosen.gpus} GPUs "
            f"({_per_gpu(chosen)}): {attention}; {against}."
        )
    return " ".join(parts)


def chosen_count(sized: Sized) -> str:
    return f"{sized.replicas} x {sized.layout.describe()}"
