"""vLLM's stop rules over generated tokens: EOS, stop strings (cut, held back while streaming),
stop token ids, min_tokens and the length cap."""

from __future__ import annotations

from tandem.sim.stopping import OutputText, Step, StopRules
from tandem.sim.tokenizer import EOS, default_tokenizer

TOKENIZER = default_tokenizer()


def feed(rules: StopRules, words: list[str]) -> list[Step]:
    output = OutputText(rules, TOKENIZER)
    steps = []
    for word in words:
        steps.append(output.append(EOS if word == "</s>" else TOKENIZER.token_id(word)))
        if steps[-1].finish_reason:
            break
    return steps


def test_length_cap_finishes_with_length() -> None:
    steps = feed(StopRules(max_tokens=2), [" baba", " bebe", " bibi"])
    assert [s.text for s in steps] == [" baba", " bebe"]
    assert steps[-1].finish_reason == "length"


def test_eos_finishes_with_stop_and_adds_no_text() -> None:
    steps = feed(StopRules(max_tokens=5), [" baba", "</s>"])
    assert steps[-1] == Step("", "stop", None)


def test_ignore_eos_keeps_going() -> None:
    steps = feed(StopRules(max_tokens=3, ignore_eos=True), [" baba", "</s>", " bebe"])
    assert "".join(s.text for s in steps) == " baba bebe"
    assert steps[-1].finish_reason == "length"


def test_stop_string_cuts_the_text_and_is_never_streamed() -> None:
    steps = feed(StopRules(max_tokens=10, stop=("be bi",)), [" baba", " bebe", " bibi", " bobo"])
    assert "".join(s.text for s in steps) == " baba be"
    assert steps[-1].finish_reason == "stop" and steps[-1].stop_reason == "be bi"
    assert all("be bi" not in s.text for s in steps)


def test_include_stop_str_in_output_keeps_it() -> None:
    steps = feed(
        StopRules(max_tokens=10, stop=("bebe",), include_stop_str_in_output=True), [" baba", " bebe"]
    )
    assert "".join(s.text for s in steps) == " baba bebe"


def test_stop_token_id_stops_with_its_id() -> None:
    bebe = TOKENIZER.token_id(" bebe")
    steps = feed(StopRules(max_tokens=10, stop_token_ids=frozenset({bebe})), [" baba", " bebe"])
    assert steps[-1] == Step("", "stop", bebe)


def test_stops_count_only_after_min_tokens() -> None:
    steps = feed(StopRules(max_tokens=4, min_tokens=2, stop=("baba",)), [" baba", " bebe", " baba"])
    assert [s.finish_reason for s in steps] == [None, None, "stop"]
