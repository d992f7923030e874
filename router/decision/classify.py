"""Direct or handoff: the prompt length against the pool's threshold."""

from __future__ import annotations

from enum import StrEnum

from tandem.api.spec import DisaggregationMode
from tandem.router.decision.snapshot import RequestFacts, RoutingPolicy

# English text averages about four characters per token with Llama-family tokenizers.
CHARS_PER_TOKEN = 4
# An estimate within this fraction of the threshold is not trusted: the engine's tokenizer decides.
EXACT_COUNT_MARGIN = 0.25


class Route(StrEnum):
    DIRECT = "direct"  # the decode instance prefills locally
    PD = "pd"  # prefill on a prefiller, KV handed off to the decoder


def estimate_prompt_tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def needs_exact_count(estimate: int, policy: RoutingPolicy) -> bool:
    """Whether to ask an engine's /tokenize before deciding.

    Only a request that might become a handoff pays for it: one whose estimate is not clearly below
    the threshold. A handoff needs the exact count, whatever the connector: its decode leg's length
    budget is the context length less the prompt (and LMCache's legs send the token ids).
    """
    if policy.mode == DisaggregationMode.NEVER:
        return False
    return estimate >= policy.threshold * (1 - EXACT_COUNT_MARGIN)


def wants_disaggregation(facts: RequestFacts, policy: RoutingPolicy) -> bool:
    return (
        policy.mode != DisaggregationMode.NEVER
        and facts.splittable
        and facts.prompt_tokens >= policy.threshold
    )
