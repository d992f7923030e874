"""Prompts through the router with the ``openai`` SDK, streamed: route, TTFT and tokens/s of each."""

from __future__ import annotations

import time
from dataclasses import dataclass

from openai import OpenAI

ROUTE_HEADER = "x-tandem-route"
SHORT_PROMPT = "In one sentence: why split prefill and decode onto different GPUs?"
# Short common words: about one token each with Llama-family tokenizers and the simulator's.
_FILLER = "the pool has a plan and the router can see it; "
_FILLER_WORDS = len(_FILLER.split())
# Room left in the context for the chat template and the answer.
_CONTEXT_MARGIN = 256


@dataclass(frozen=True)
class StreamResult:
    route: str
    ttft_s: float
    completion_tokens: int
    total_s: float

    @property
    def tokens_per_s(self) -> float:
        """Generation speed after the first token (the decode rate a user sees)."""
        decode_s = self.total_s - self.ttft_s
        return (self.completion_tokens - 1) / decode_s if self.completion_tokens > 1 and decode_s > 0 else 0.0


def long_prompt(threshold_tokens: int, max_model_len: int | None, max_tokens: int) -> str:
    """A prompt comfortably above ``threshold_tokens`` (so the router hands it off) that still fits."""
    target = int(threshold_tokens * 1.25) + 64
    if max_model_len is not None:
        target = min(target, max_model_len - max_tokens - _CONTEXT_MARGIN)
    if target <= threshold_tokens:
        raise ValueError(
            f"a prompt above the handoff threshold ({threshold_tokens} tokens) does not fit in "
            f"max_model_len {max_model_len}"
        )
    repeats = -(-target // _FILLER_WORDS)
    return "Summarise this text. " + _FILLER * repeats


def stream_chat(
    base_url: str, model: str, prompt: str, max_tokens: int, timeout_s: float = 60.0
) -> StreamResult:
    """One streamed chat completion; TTFT is measured to the first chunk carrying content."""
    client = OpenAI(base_url=base_url, api_key="demo", timeout=timeout_s, max_retries=0)
    started = time.perf_counter()
    first: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    with client.chat.completions.with_streaming_response.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        route = response.headers.get(ROUTE_HEADER, "unknown")
        for chunk in response.parse():
            if chunk.usage is not None:
                usage_tokens = chunk.usage.completion_tokens
            if any(choice.delta.content for choice in chunk.choices):
                chunks += 1
                if first is None:
                    first = time.perf_counter()
    ended = time.perf_counter()
    if first is None:
        raise ValueError(f"the stream from {base_url} carried no content")
    tokens = usage_tokens if usage_tokens is not None else chunks
    return StreamResult(
        route=route, ttft_s=first - started, completion_tokens=tokens, total_s=ended - started
    )
