"""The simulator's tokenizer: deterministic across processes, lossless, and stable on generated text."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tandem.sim.chat_template import ChatTemplateError, render_chat
from tandem.sim.tokenizer import EOS, default_tokenizer, generator_words

TEXTS = [
    "Hello world, tell me a story about Kubernetes.",
    "  leading spaces\tand tabs\n\nand newlines  ",
    "Unicode: café, 東京, emoji 🚀 and digits 12345",
    "punctuation!?... (brackets) [x] {y} <z>",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_decoding_the_encoding_gives_back_the_text(text: str) -> None:
    tokenizer = default_tokenizer()
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_token_ids_are_the_same_in_another_process_with_another_hash_seed() -> None:
    here = [default_tokenizer().encode(text) for text in TEXTS]
    script = (
        "import json; from tandem.sim.tokenizer import default_tokenizer; "
        f"print(json.dumps([default_tokenizer().encode(t) for t in {TEXTS!r}]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={"PYTHONHASHSEED": "12345"},
        capture_output=True,
        check=True,
        text=True,
    )
    assert json.loads(out.stdout) == here


def test_generated_words_are_single_tokens_that_survive_a_round_trip() -> None:
    tokenizer = default_tokenizer()
    words = [tokenizer.token_id(w) for w in generator_words()[:200]] + [tokenizer.token_id(".")]
    assert tokenizer.encode(tokenizer.decode(words)) == words


def test_one_token_decodes_alone_as_in_a_list() -> None:
    tokenizer = default_tokenizer()
    assert all(tokenizer.decode_token(t) == tokenizer.decode([t]) for t in range(tokenizer.vocab_size))


def test_special_token_text_becomes_the_special_token() -> None:
    tokenizer = default_tokenizer()
    ids = tokenizer.encode("stop</s>here")
    assert EOS in ids
    assert tokenizer.decode(ids) == "stophere"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "stop</s>here"


def test_chat_template_renders_roles_and_the_generation_prompt() -> None:
    text = render_chat(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ]
    )
    assert text == "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"


def test_chat_template_refuses_non_text_content() -> None:
    with pytest.raises(ChatTemplateError, match="only text"):
        render_chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
