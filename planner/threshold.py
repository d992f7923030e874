"""The disaggregation threshold: the prompt length from which a request is worth a handoff.

A decode replica can prefill a short prompt itself, inside one engine step next to its decode
batch. That pays when (a) the step, stalled by the local prefill, still meets the ITL target, and
(b) it is no slower than the remote path: prefill queueing and the prefill on a prefill replica,
the KV handoff, and the first decode step. Both conditions hold for short prompts and fail from
some length on; the threshold is the first length where either fails. The router sends prompts
below it to a decode replica alone.
"""

from __future__ import annotations

from collections.abc import Callable

from tandem.planner.demand import Demand
from tandem.planner.layouts import Layout
from tandem.planner.model import ModelShape
from tandem.planner.sizing import Sized, largest_true

# Longest prompt searched when the model states no context length.
DEFAULT_MAX_PROMPT = 131072


def prompt_tokens_threshold(
    model: ModelShape,
    prefill: Sized,
    decode: Sized,
    demand: Demand,
    transfer_ms: Callable[[Layout, int], float],
) -> int:
    """The threshold for these sized roles; `transfer_ms(prefill layout, tokens)` times a handoff."""
    d, p = decode.layout, prefill.layout
    decode_replica, prefill_replica = d.cost(model), p.cost(model)
    batch = max(decode.operating_sequences / d.parallel_batches, 1.0)
    context = demand.decode_context
    first_token = decode_replica.step_ms(batch, context)

    def local_ms(tokens: int) -> float:
        return decode_replica.step_ms(batch, context, tokens)

    def remote_ms(tokens: int) -> float:
        return (
            prefill.mean_wait_ms + prefill_replica.prefill_ms([tokens]) + transfer_ms(p, tokens) + first_token
        )

    limit = model.max_context_tokens or DEFAULT_MAX_PROMPT
    fits = largest_true(lambda n: local_ms(n) <= demand.itl_ms, 1, limit)
    if fits < 1:
        return 0
    return largest_true(lambda n: local_ms(n) <= remote_ms(n), 1, fits) + 1
