"""Generation is a function of (prompt, position, seed), and a prompt that ends with generated text
continues it: the property that makes handoff answers equal aggregated ones."""

from __future__ import annotations

import random

import pytest

from tandem.sim.generation import Vocabulary, prefix_hashes, resume_point, token_at, word_at
from tandem.sim.tokenizer import EOS, default_tokenizer

VOCABULARY = Vocabulary(default_tokenizer())


def generate(prompt: list[int], count: int, seed: int = 0, min_tokens: int = 0) -> list[int]:
    """What the engine emits: EOS is masked below min_tokens."""
    point = resume_point(prompt, prefix_hashes(prompt, seed), VOCABULARY)
    out = []
    for k in range(count):
        token = token_at(point.anchor, point.offset + k, VOCABULARY)
        if token == EOS and k < min_tokens:
            token = word_at(point.anchor, point.offset + k, VOCABULARY)
        out.append(token)
    return out


def random_prompts(count: int) -> list[list[int]]:
    rng = random.Random(7)
    size = default_tokenizer().vocab_size
    return [[rng.randrange(size) for _ in range(rng.randint(1, 60))] for _ in range(count)]


@pytest.mark.parametrize("prompt", random_prompts(200))
def test_prompt_plus_first_token_continues_with_the_rest(prompt: list[int]) -> None:
    answer = generate(prompt, 8)
    assert generate(prompt + answer[:1], 7) == answer[1:]
    assert generate(prompt + answer[:5], 3) == answer[5:]


def test_a_prompt_that_already_ends_in_a_continuation_keeps_continuing() -> None:
    base = default_tokenizer().encode("Summarise the plan.")
    prompt = base + generate(base, 3)  # a user prompt that happens to end in generated text
    answer = generate(prompt, 6)
    assert generate(prompt + answer[:1], 5) == answer[1:]


def test_the_same_prompt_gets_the_same_answer_and_the_seed_changes_it() -> None:
    prompt = default_tokenizer().encode("What is disaggregated serving?")
    assert generate(prompt, 10) == generate(list(prompt), 10)
    assert generate(prompt, 10, seed=1) != generate(prompt, 10)


def test_a_prompt_with_eos_ends_on_its_first_token_unless_min_tokens() -> None:
    prompt = default_tokenizer().encode("Say nothing.</s>")
    assert generate(prompt, 1) == [EOS]
    masked = generate(prompt, 4, min_tokens=1)
    assert EOS not in masked
    assert generate(prompt + masked[:1], 3) == masked[1:]


def test_a_prompt_with_eos_continues_after_an_ignored_eos() -> None:
    prompt = default_tokenizer().encode("Say nothing.</s>")
    answer = generate(prompt, 5)  # ignore_eos keeps the EOS in the output and goes on
    assert answer[0] == EOS
    assert generate([*prompt, EOS], 4) == answer[1:]


def test_generated_text_reads_as_words() -> None:
    tokenizer = default_tokenizer()
    text = tokenizer.decode(generate(tokenizer.encode("Hello"), 30))
    assert text.startswith(" ")
    assert ".." not in text and ",," not in text
    assert tokenizer.encode(text) == generate(tokenizer.encode("Hello"), 30)
