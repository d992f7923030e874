"""Prompts of a length in the server's tokens: the calibration, and exact lengths on a simulator."""

from __future__ import annotations

import random

import pytest

from tandem.load.prompts import PROBE_WORDS, WORDS, Calibration, CalibrationError, prompt_text
from tandem.sim.tokenizer import default_tokenizer


@pytest.mark.parametrize(
    ("counts", "per_word", "overhead", "exact"),
    [
        ((32, 96), 1.0, 0.0, True),  # one token a word, nothing added
        ((33, 97), 1.0, 1.0, True),  # a BOS token
        ((45, 109), 1.0, 13.0, True),  # a chat template
        ((64, 192), 2.0, 0.0, False),  # every word split in two
    ],
)
def test_two_probes_give_the_slope_and_the_overhead(
    counts: tuple[int, int], per_word: float, overhead: float, exact: bool
) -> None:
    assert PROBE_WORDS == (32, 96)
    calibration = Calibration.from_probes(counts)
    assert (calibration.tokens_per_word, calibration.overhead_tokens, calibration.exact) == (
        per_word,
        overhead,
        exact,
    )


def test_words_for_a_length_inverts_the_calibration() -> None:
    bos = Calibration(1.0, 1.0)
    assert [bos.words_for(n) for n in (1, 2, 100)] == [1, 1, 99]  # at least one word
    assert [bos.tokens_of(bos.words_for(n)) for n in (2, 100, 8000)] == [2, 100, 8000]
    split = Calibration(2.0, 0.0)
    assert split.words_for(100) == 50


def test_a_server_without_prompt_usage_cannot_be_calibrated() -> None:
    with pytest.raises(CalibrationError, match="does not report prompt tokens"):
        Calibration.from_probes((0, 0))


def test_every_word_is_one_token_of_the_simulators_vocabulary() -> None:
    tokenizer = default_tokenizer()
    assert len(set(WORDS)) == len(WORDS) >= 64
    for word in WORDS:
        assert tokenizer.encode(word) == [tokenizer.token_id(word)], word
    text = prompt_text(500, random.Random(0))
    assert len(tokenizer.encode(text)) == 500


def test_random_prompts_share_no_prefix_block() -> None:
    rng = random.Random(1)
    starts = {prompt_text(16, rng) for _ in range(2000)}
    assert len(starts) == 2000  # a prefix cache's 16-token blocks never match across prompts
