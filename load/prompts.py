"""Prompts of a given length in the server's tokens, through nothing but the OpenAI API.

A prompt is a random sequence of short, common English words, each with a leading space: in
byte-level BPE (GPT-2, Llama 3, Qwen, Mistral), whose pre-tokenizer splits off every ``␣word``,
and in SentencePiece (Llama 2), whose pieces never cross a ``▁``, each such word is one token, and so
it is in the simulator's vocabulary (every 1-3 letter word with a leading space). Random words keep
the prompts apart, so a prefix cache finds nothing to share between them.

The tokenizer is not assumed: two probe requests (``max_tokens: 1``) with prompts of ``k1`` and
``k2`` words measure, from ``usage.prompt_tokens``, the tokens per word (1 when the words are single
tokens) and the fixed overhead (a BOS token, a chat template). A prompt of ``n`` tokens then has
``(n - overhead) / tokens_per_word`` words: exactly ``n`` tokens when the probes found 1 token per
word, about ``n`` otherwise (the run says so, and each request's record keeps the server's count).
This works through any OpenAI-compatible server, Tandem's router included, where ``/tokenize`` is
not served.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

WORDS: tuple[str, ...] = (
    " the",
    " of",
    " and",
    " to",
    " in",
    " is",
    " it",
    " for",
    " on",
    " as",
    " at",
    " by",
    " be",
    " or",
    " an",
    " we",
    " he",
    " you",
    " are",
    " was",
    " not",
    " but",
    " can",
    " all",
    " one",
    " had",
    " has",
    " his",
    " her",
    " our",
    " new",
    " may",
    " any",
    " how",
    " out",
    " use",
    " two",
    " day",
    " way",
    " get",
    " see",
    " now",
    " old",
    " man",
    " who",
    " its",
    " did",
    " yes",
    " let",
    " put",
    " end",
    " why",
    " big",
    " set",
    " own",
    " few",
    " run",
    " top",
    " far",
    " low",
    " red",
    " ten",
    " six",
    " air",
    " age",
    " art",
    " car",
    " cut",
    " eat",
    " eye",
    " fun",
    " hot",
    " job",
    " key",
    " law",
    " lot",
    " map",
    " oil",
    " pay",
    " sea",
    " sun",
    " war",
    " win",
)
# Word counts of the two calibration probes: far enough apart to measure the slope, small enough to
# fit any context.
PROBE_WORDS = (32, 96)


class CalibrationError(ValueError):
    """The probes' token counts describe no usable prompt length."""


@dataclass(frozen=True)
class Calibration:
    """Server tokens of a prompt of ``w`` words: ``overhead_tokens + tokens_per_word * w``."""

    tokens_per_word: float
    overhead_tokens: float

    @classmethod
    def from_probes(cls, counts: tuple[int, int]) -> Calibration:
        """From ``usage.prompt_tokens`` of the probes of ``PROBE_WORDS`` words."""
        (k1, k2), (p1, p2) = PROBE_WORDS, counts
        slope = (p2 - p1) / (k2 - k1)
        if slope <= 0:
            raise CalibrationError(
                f"the server counted {p1} and {p2} prompt tokens for {k1} and {k2} words: "
                "it does not report prompt tokens in usage"
            )
        return cls(tokens_per_word=slope, overhead_tokens=p1 - slope * k1)

    @property
    def exact(self) -> bool:
        """Whether every prompt length is exact: one token per word, a whole number of others."""
        return self.tokens_per_word == 1 and self.overhead_tokens == int(self.overhead_tokens)

    def words_for(self, tokens: int) -> int:
        """Words of a prompt the server counts as ``tokens`` (at least one word)."""
        return max(1, round((tokens - self.overhead_tokens) / self.tokens_per_word))

    def tokens_of(self, words: int) -> int:
        """The server's count for a prompt of ``words`` words (exact when ``exact``)."""
        return round(self.overhead_tokens + self.tokens_per_word * words)

    def describe(self) -> str:
        quality = "exact" if self.exact else "approximate"
        return f"{self.tokens_per_word:g} token/word + {self.overhead_tokens:g} ({quality})"


def prompt_text(words: int, rng: random.Random) -> str:
    """``words`` random words, each with its leading space."""
    return "".join(rng.choices(WORDS, k=words))
