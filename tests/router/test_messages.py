"""Client requests in, answers out: request parsing, SSE framing, composing a handoff's answer."""

from __future__ import annotations

import json

import pytest

from tandem.router.client_request import Kind, parse_client_request
from tandem.router.compose import AnswerComposer, answer_as_events
from tandem.router.errors import BadRequestError
from tandem.router.sse import SseParser


def parse(kind: Kind, body: object) -> object:
    return parse_client_request(kind, json.dumps(body).encode(), "rid")


def test_completion_request_facts() -> None:
    request = parse_client_request(
        Kind.COMPLETION, b'{"model": "m", "prompt": "hello there", "max_tokens": 5, "stream": true}', "r1"
    )
    assert (request.model, request.stream, request.max_tokens, request.prompt_text) == (
        "m",
        True,
        5,
        "hello there",
    )
    assert request.splittable and request.prompt_ids is None and request.kind.path == "/v1/completions"


def test_chat_request_counts_message_text_and_prefers_max_completion_tokens() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {}}],
            },
        ],
        "max_tokens": 9,
        "max_completion_tokens": 4,
    }
    request = parse_client_request(Kind.CHAT, json.dumps(body).encode(), "r")
    assert request.prompt_text == "be brief\nhi"
    assert request.max_tokens == 4


def test_token_id_prompts_are_counted_exactly() -> None:
    request = parse_client_request(Kind.COMPLETION, b'{"prompt": [1, 2, 3]}', "r")
    assert request.prompt_ids == [1, 2, 3] and request.model is None


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        (Kind.COMPLETION, {"prompt": "x", "n": 2}),
        (Kind.COMPLETION, {"prompt": "x", "echo": True}),
        (Kind.COMPLETION, {"prompt": "x", "logprobs": 1}),
        (Kind.COMPLETION, {"prompt": "x", "max_tokens": 1}),
        (Kind.COMPLETION, {"prompt": ["a", "b"]}),
        (Kind.CHAT, {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}),
        (
            Kind.CHAT,
            {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}},
        ),
    ],
)
def test_requests_a_split_cannot_reproduce_are_not_splittable(kind: Kind, body: dict[str, object]) -> None:
    assert not parse_client_request(kind, json.dumps(body).encode(), "r").splittable


@pytest.mark.parametrize(
    ("kind", "raw", "code"),
    [
        (Kind.COMPLETION, b"{not json", "invalid_json"),
        (Kind.COMPLETION, b"[1, 2]", "invalid_json"),
        (Kind.COMPLETION, b'{"prompt": 5}', "invalid_prompt"),
        (Kind.COMPLETION, b'{"prompt": "x", "max_tokens": 0}', "invalid_value"),
        (Kind.COMPLETION, b'{"prompt": "x", "max_tokens": true}', "invalid_value"),
        (Kind.COMPLETION, b'{"prompt": "x", "stream": "yes"}', "invalid_value"),
        (Kind.COMPLETION, b'{"prompt": "x", "model": 3}', "invalid_value"),
        (Kind.CHAT, b'{"messages": []}', "invalid_messages"),
        (Kind.CHAT, b'{"messages": ["hi"]}', "invalid_messages"),
    ],
)
def test_bad_requests_are_400_with_a_code(kind: Kind, raw: bytes, code: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        parse_client_request(kind, raw, "r")
    assert caught.value.status == 400
    assert json.loads(caught.value.body())["error"]["code"] == code


def test_client_kv_transfer_params_are_dropped() -> None:
    raw = b'{"prompt": "x", "kv_transfer_params": {"do_remote_prefill": true, "remote_host": "203.0.113.9"}}'
    request = parse_client_request(Kind.COMPLETION, raw, "r")
    assert "kv_transfer_params" not in request.body
    assert b"203.0.113.9" not in request.raw


def test_prefix_key_depends_on_the_beginning_only() -> None:
    a = parse(Kind.COMPLETION, {"prompt": "S" * 600 + "question one"})
    b = parse(Kind.COMPLETION, {"prompt": "S" * 600 + "question two"})
    c = parse(Kind.COMPLETION, {"prompt": "T" * 600 + "question one"})
    assert a.prefix_key() == b.prefix_key() != c.prefix_key()  # type: ignore[attr-defined]


def test_sse_parser_handles_split_chunks_and_crlf() -> None:
    parser = SseParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.feed(b': 1}\n\ndata: {"b": 2}\r\n\r\ndata: [DO') == [b'{"a": 1}', b'{"b": 2}']
    payloads = parser.feed(b"NE]\n\n")
    assert payloads == [b"[DONE]"] and SseParser.is_done(payloads[0])


PREFILL = {
    "id": "cmpl-x",
    "created": 111,
    "choices": [{"index": 0, "text": " Hello", "finish_reason": "length"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 1},
    "kv_transfer_params": {"first_tok": 42},
}


def test_composed_completion_puts_the_first_token_in_front_and_recounts_usage() -> None:
    composer = AnswerComposer(Kind.COMPLETION, "rid", "m", 10, PREFILL)
    decoded = {
        "choices": [{"text": " world", "finish_reason": "length"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
    }
    whole = composer.whole(decoded)
    assert whole["id"] == "cmpl-rid" and whole["object"] == "text_completion"
    assert whole["choices"][0]["text"] == " Hello world"
    assert whole["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}


def test_composed_chat_stream_converts_completion_chunks() -> None:
    composer = AnswerComposer(Kind.CHAT, "rid", "m", 10, PREFILL)
    first = composer.first_event()
    assert first["object"] == "chat.completion.chunk" and first["id"] == "chatcmpl-rid"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": " Hello"}
    assert first["choices"][0]["finish_reason"] is None  # the prefill's "length" is not the answer's
    nxt = composer.stream_event({"choices": [{"text": " you", "finish_reason": "stop"}]})
    assert nxt["choices"][0]["delta"] == {"content": " you"} and nxt["choices"][0]["finish_reason"] == "stop"
    usage = composer.stream_event({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2}})
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3


def test_answer_that_ends_at_the_first_token() -> None:
    prefill = {**PREFILL, "choices": [{"text": "", "finish_reason": "stop"}]}
    composer = AnswerComposer(Kind.CHAT, "rid", "m", 10, prefill)
    assert composer.ends_at_first_token
    whole = composer.whole(None)
    assert whole["choices"][0]["finish_reason"] == "stop" and whole["usage"]["completion_tokens"] == 1
    assert composer.first_event()["choices"][0]["finish_reason"] == "stop"


def test_whole_answer_as_stream_events() -> None:
    answer = {
        "id": "chatcmpl-1",
        "created": 1,
        "model": "m",
        "usage": {"total_tokens": 3},
        "choices": [{"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
    }
    events = answer_as_events(answer, Kind.CHAT, include_usage=True)
    assert events[0]["choices"][0]["delta"]["content"] == "Hi" and events[1]["usage"] == {"total_tokens": 3}
    assert len(answer_as_events(answer, Kind.CHAT, include_usage=False)) == 1
