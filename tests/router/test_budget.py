"""The answer's length budget, as vLLM 0.33 computes max_tokens (see router/budget.py for the lines
of vLLM each rule comes from): defaults, the clamp to the context, and the 400s with vLLM's words."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tandem.router.budget import answer_budget
from tandem.router.client_request import Kind, parse_client_request
from tandem.router.errors import BadRequestError

MAX_MODEL_LEN = 4096


def budget(kind: Kind, prompt_tokens: int, **fields: Any) -> int:
    prompt = {"messages": [{"role": "user", "content": "x"}]} if kind is Kind.CHAT else {"prompt": "x"}
    request = parse_client_request(kind, msgspec.json.encode({**prompt, **fields}), "r")
    return answer_budget(request, prompt_tokens, MAX_MODEL_LEN)


@pytest.mark.parametrize(
    ("kind", "fields", "expected"),
    [
        (Kind.CHAT, {}, MAX_MODEL_LEN - 1000),  # no max_tokens: the rest of the context
        (Kind.COMPLETION, {}, 16),  # the completions protocol's default
        (Kind.CHAT, {"max_tokens": 50}, 50),
        (Kind.CHAT, {"max_completion_tokens": 40, "max_tokens": 50}, 40),  # read first
        (Kind.COMPLETION, {"max_tokens": 50}, 50),
        (Kind.CHAT, {"max_tokens": 4000}, MAX_MODEL_LEN - 1000),  # beyond the context: clamped
        (Kind.COMPLETION, {"max_tokens": MAX_MODEL_LEN}, MAX_MODEL_LEN - 1000),
    ],
)
def test_budget_is_what_one_engine_would_generate(kind: Kind, fields: dict[str, Any], expected: int) -> None:
    assert budget(kind, 1000, **fields) == expected


@pytest.mark.parametrize(
    ("kind", "fields", "param", "message"),
    [
        (
            Kind.COMPLETION,
            {"max_tokens": 1_000_000_000},
            "max_tokens",
            "max_tokens=1000000000 cannot be greater than max_model_len=4096. "
            "Please request fewer output tokens.",
        ),
        (
            Kind.CHAT,
            {"max_completion_tokens": 5000},
            "max_completion_tokens",
            "max_completion_tokens=5000 cannot be greater than max_model_len=4096.",
        ),
        (Kind.CHAT, {"max_tokens": 4097}, "max_tokens", "max_tokens=4097 cannot be greater than"),
    ],
)
def test_asking_for_more_than_the_context_is_refused_as_vllm_refuses_it(
    kind: Kind, fields: dict[str, Any], param: str, message: str
) -> None:
    with pytest.raises(BadRequestError) as caught:
        budget(kind, 10, **fields)
    assert caught.value.status == 400 and caught.value.param == param
    assert message in caught.value.message
    assert msgspec.json.decode(caught.value.body())["error"]["param"] == param


def test_a_prompt_longer_than_the_context_is_refused() -> None:
    with pytest.raises(
        BadRequestError,
        match=r"maximum context length is 4096 tokens\. However, your prompt contains 4100 input tokens",
    ):
        budget(Kind.CHAT, 4100)
    with pytest.raises(
        BadRequestError, match=r"prompt \(length 4096\) plus the number of requested output tokens"
    ):
        budget(Kind.COMPLETION, MAX_MODEL_LEN, max_tokens=1)


def test_one_token_of_room_is_a_budget_of_one() -> None:
    assert budget(Kind.CHAT, MAX_MODEL_LEN - 1) == 1
