"""Deterministic generation: what the simulated model says, as a function of prompt tokens and position.

Generated token ``k`` of a prompt is ``token_at(anchor, offset + k)``: a hash of the *anchor* (the
prompt with any already-generated continuation stripped off), the engine seed and the position. The
anchor is what makes handoffs answer exactly what one engine would have:

- An aggregated request for prompt ``P`` yields ``t0, t1, …``.
- The LMCache decode leg receives ``P + [t0]``. Its last token is exactly what ``P`` generates at
  position 0, so :func:`resume_point` recognises ``P`` as the anchor with offset 1 and the leg
  yields ``t1, t2, …``: the same text, character for character.

Formally, the anchor of a prompt ``C`` is its shortest non-empty prefix ``C[:s]`` whose remaining
tokens are exactly what ``C[:s]`` generates from position 0; the offset is ``len(C) - s``. Taking
the longest such continuation makes the rule consistent: appending the next generated token to any
prompt moves the offset by one and keeps the anchor.

A real model behaves alike when decoding greedily. The simulator ignores temperature and sampling
seeds; ``--seed`` (the same on every engine of a pool, like the weights) changes every answer.

End of sequence: if the anchor contains the EOS token ``</s>``, the token at position 0 is EOS, so
a request whose prompt contains ``</s>`` stops on its first token (``finish_reason: "stop"``). With
``min_tokens`` the EOS is masked and position 0 says its ordinary word instead (:func:`word_at`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tandem.sim.tokenizer import EOS, Tokenizer, generator_words

_MASK = (1 << 64) - 1
_POSITION_SALT = 0x5851F42D4C957F2D
# Which anchor hash a reader of half-written KV cache gets: deterministic garbage.
CORRUPTION_SALT = 0xC0FFEE1234567


def mix64(value: int) -> int:
    """splitmix64's finaliser: a cheap, well-spread 64-bit hash step."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def prefix_hashes(tokens: Sequence[int], seed: int) -> list[int]:
    """``hashes[i]`` identifies ``tokens[:i]`` (and the seed); ``len(hashes) == len(tokens) + 1``."""
    value = mix64(seed & _MASK)
    hashes = [value]
    append = hashes.append
    for token in tokens:
        # mix64 inlined: this loop runs once per prompt token on the request path.
        value = ((value ^ token) + 0x9E3779B97F4A7C15) & _MASK
        value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
        value ^= value >> 31
        append(value)
    return hashes


@dataclass(frozen=True)
class Anchor:
    """Where a prompt's generation comes from: the anchor's hash and whether it holds an EOS."""

    hash: int
    has_eos: bool

    def corrupted(self) -> Anchor:
        return Anchor(self.hash ^ CORRUPTION_SALT, self.has_eos)


@dataclass(frozen=True)
class ResumePoint:
    anchor: Anchor
    offset: int  # prompt tokens that are already the anchor's generated text


class Vocabulary:
    """The token ids the generator draws from."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.words = tuple(tokenizer.token_id(w) for w in generator_words())
        # Tokens that can open a generation: a quick filter for resume_point's scan.
        self.openers = frozenset((*self.words, EOS))
        self.period = tokenizer.token_id(".")
        self.comma = tokenizer.token_id(",")


def _draw(anchor_hash: int, position: int) -> int:
    return mix64(anchor_hash ^ mix64(position ^ _POSITION_SALT))


def _punctuation(draw: int, vocabulary: Vocabulary) -> int | None:
    bucket = draw % 100
    if bucket < 8:
        return vocabulary.period
    if bucket < 14:
        return vocabulary.comma
    return None


def word_at(anchor: Anchor, position: int, vocabulary: Vocabulary) -> int:
    """The token at ``position`` when EOS is not an option."""
    draw = _draw(anchor.hash, position)
    mark = _punctuation(draw, vocabulary)
    # No mark opens the text or follows another mark: keeps the prose readable.
    if (
        mark is not None
        and position > 0
        and _punctuation(_draw(anchor.hash, position - 1), vocabulary) is None
    ):
        return mark
    return vocabulary.words[(draw >> 8) % len(vocabulary.words)]


def token_at(anchor: Anchor, position: int, vocabulary: Vocabulary) -> int:
    if position == 0 and anchor.has_eos:
        return EOS
    return word_at(anchor, position, vocabulary)


def _generated(anchor: Anchor, position: int, token: int, vocabulary: Vocabulary) -> bool:
    """Could ``token`` be what ``anchor`` generated at ``position`` (EOS masked or not)?"""
    expected = token_at(anchor, position, vocabulary)
    return token == expected or (expected == EOS and token == word_at(anchor, position, vocabulary))


def resume_point(prompt: Sequence[int], hashes: Sequence[int], vocabulary: Vocabulary) -> ResumePoint:
    """Split ``prompt`` into anchor and continuation (see the module docstring); expected O(len(prompt)).

    ``hashes`` is ``prefix_hashes(prompt, seed)``.
    """
    eos_seen = [False] * (len(prompt) + 1)
    for i, token in enumerate(prompt):
        eos_seen[i + 1] = eos_seen[i] or token == EOS
    openers = vocabulary.openers
    for start in range(1, len(prompt)):
        if prompt[start] not in openers:
            continue
        anchor = Anchor(hashes[start], eos_seen[start])
        if all(_generated(anchor, q, prompt[start + q], vocabulary) for q in range(len(prompt) - start)):
            return ResumePoint(anchor, len(prompt) - start)
    return ResumePoint(Anchor(hashes[-1], eos_seen[-1]), 0)
