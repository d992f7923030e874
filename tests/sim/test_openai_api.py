"""The simulator's OpenAI surface, in-process, through the official SDK and raw HTTP: answers,
usage, streams, stop rules, tokenization, models, metrics and vLLM's error bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from tandem.sim.settings import SimSettings
from tandem.sim.testing import metric_value, sim_client

MODEL = "acme/sim-8b"
SETTINGS = SimSettings(model=MODEL, served_model_name=(MODEL, "sim"), speed=50, max_model_len=512)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with sim_client(SETTINGS) as client:
        yield client


@pytest.fixture
def sdk(client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://sim/v1", api_key="unused", http_client=client, max_retries=0)


async def tokenize(client: httpx.AsyncClient, **body: object) -> list[int]:
    response = await client.post("/tokenize", json=body)
    response.raise_for_status()
    tokens: list[int] = response.json()["tokens"]
    return tokens


async def test_a_completion_is_deterministic_and_counts_its_tokens(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    first = await sdk.completions.create(model=MODEL, prompt="Tell me about GPUs", max_tokens=12)
    again = await sdk.completions.create(model="sim", prompt="Tell me about GPUs", max_tokens=12)
    assert first.choices[0].text == again.choices[0].text != ""
    assert first.choices[0].finish_reason == "length"
    assert first.usage is not None
    assert first.usage.completion_tokens == 12
    assert first.usage.prompt_tokens == len(await tokenize(client, prompt="Tell me about GPUs"))
    assert first.usage.total_tokens == first.usage.prompt_tokens + 12


async def test_token_ids_and_text_prompts_get_the_same_answer(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    ids = await tokenize(client, prompt="Same question")
    by_text = await sdk.completions.create(model=MODEL, prompt="Same question", max_tokens=6)
    by_ids = await sdk.completions.create(model=MODEL, prompt=ids, max_tokens=6)
    assert by_ids.choices[0].text == by_text.choices[0].text


async def test_the_answer_tokens_tokenize_back_to_what_was_generated(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    ids = await tokenize(client, prompt="Round trip")
    answer = (await sdk.completions.create(model=MODEL, prompt=ids, max_tokens=8)).choices[0].text
    generated = await tokenize(client, prompt=answer)
    assert len(generated) == 8
    continued = await sdk.completions.create(model=MODEL, prompt=ids + generated[:1], max_tokens=7)
    assert continued.choices[0].text == answer[len(await detokenize(client, generated[:1])) :]


async def detokenize(client: httpx.AsyncClient, tokens: list[int]) -> str:
    text: str = (await client.post("/detokenize", json={"tokens": tokens})).json()["prompt"]
    return text


async def test_a_streamed_chat_says_what_the_plain_chat_says(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Explain KV caches."},
    ]
    plain = await sdk.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=10)
    stream = await sdk.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=10, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    assert usage is not None and not chunks[-1].choices
    assert usage.completion_tokens == 10
    assert usage.prompt_tokens == len(await tokenize(client, messages=messages))


async def test_a_chat_answers_like_a_completion_of_its_tokenized_messages(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    # What a proxy relies on when it turns a chat request into a prefill on token ids.
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "Plan it."}]
    chat = await sdk.chat.completions.create(model=MODEL, messages=messages, max_tokens=9)
    ids = await tokenize(client, messages=messages)
    completion = await sdk.completions.create(model=MODEL, prompt=ids, max_tokens=9)
    assert chat.choices[0].message.content == completion.choices[0].text


async def test_cached_prompt_tokens_are_reported_when_asked() -> None:
    async with sim_client(SimSettings(speed=50, prompt_tokens_details=True)) as client:
        body = {"prompt": "A long shared system prompt. " * 20, "max_tokens": 2}
        cold = (await client.post("/v1/completions", json=body)).json()["usage"]
        warm = (await client.post("/v1/completions", json=body)).json()["usage"]
    assert cold["prompt_tokens_details"] == {"cached_tokens": 0}
    assert warm["prompt_tokens_details"]["cached_tokens"] == cold["prompt_tokens"] // 16 * 16


async def test_a_streamed_completion_without_usage_ends_with_the_finish(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.completions.create(model=MODEL, prompt="Hi", max_tokens=5, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_a_stop_string_ends_the_answer_before_it(sdk: openai.AsyncOpenAI) -> None:
    full = (await sdk.completions.create(model=MODEL, prompt="Stops", max_tokens=10)).choices[0].text
    stop = full.split()[3]
    cut = await sdk.completions.create(model=MODEL, prompt="Stops", max_tokens=10, stop=[stop])
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


async def test_a_prompt_with_eos_ends_on_the_first_token(sdk: openai.AsyncOpenAI) -> None:
    done = await sdk.completions.create(model=MODEL, prompt="Nothing to add.</s>", max_tokens=10)
    assert (done.choices[0].text, done.choices[0].finish_reason) == ("", "stop")
    assert done.usage is not None and done.usage.completion_tokens == 1
    ignored = await sdk.completions.create(
        model=MODEL, prompt="Nothing to add.</s>", max_tokens=4, extra_body={"ignore_eos": True}
    )
    assert ignored.choices[0].finish_reason == "length" and ignored.choices[0].text


async def test_models_lists_every_served_name(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models")).json()
    assert [m["id"] for m in body["data"]] == [MODEL, "sim"]
    assert body["data"][0]["max_model_len"] == 512


async def test_tokenize_reports_count_limit_and_pieces(client: httpx.AsyncClient) -> None:
    body = (await client.post("/tokenize", json={"prompt": "Hello world", "return_token_strs": True})).json()
    assert body["count"] == len(body["tokens"]) and body["max_model_len"] == 512
    assert "".join(body["token_strs"]) == "Hello world"


async def test_the_request_id_header_names_the_response(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/completions", json={"prompt": "Hi", "max_tokens": 1}, headers={"X-Request-Id": "abc-123"}
    )
    assert response.json()["id"] == "cmpl-abc-123"


async def test_metrics_report_vllm_names_with_labels(
    sdk: openai.AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    await sdk.completions.create(model=MODEL, prompt="Count me", max_tokens=3)
    text = (await client.get("/metrics")).text
    labels = {"model_name": MODEL, "engine": "0"}
    assert metric_value(text, "vllm:generation_tokens_total", **labels) == 3
    assert metric_value(text, "vllm:prompt_tokens_total", **labels) > 0
    assert metric_value(text, "vllm:request_success_total", finished_reason="length", **labels) == 1
    assert metric_value(text, "vllm:time_to_first_token_seconds_count", **labels) == 1
    assert metric_value(text, "vllm:inter_token_latency_seconds_count", **labels) == 2
    for gauge in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert metric_value(text, gauge, **labels) == 0
    present = (
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_preemptions_total",
        "vllm:e2e_request_latency_seconds_count",
        "vllm:request_queue_time_seconds_count",
        "vllm:request_prefill_time_seconds_count",
    )
    for name in present:
        metric_value(text, name, **labels)


async def test_health_is_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert (response.status_code, response.content) == (200, b"")


async def test_an_unknown_model_is_404(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.completions.create(model="other", prompt="Hi", max_tokens=1)
    assert caught.value.body == {
        "message": "The model `other` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"prompt": "Hi", "max_tokens": 600}, "maximum context length is 512 tokens"),
        ({"prompt": "Hi", "max_tokens": 0}, "max_tokens must be at least 1"),
        ({"prompt": "", "max_tokens": 1}, "cannot be empty"),
        ({"prompt": [10**9], "max_tokens": 1}, "out of vocabulary"),
        ({"prompt": "Hi", "n": 2}, "n=1"),
        ({"prompt": ["a", "b"]}, "batched prompts"),
        ({"max_tokens": 1}, "prompt"),
        ({"prompt": "Hi", "kv_transfer_params": "nope"}, "kv_transfer_params"),
        ({"prompt": "Hi", "stream_options": {"include_usage": True}}, "stream=True"),
    ],
)
async def test_bad_requests_get_400_with_an_openai_error_body(
    client: httpx.AsyncClient, body: dict[str, object], fragment: str
) -> None:
    response = await client.post("/v1/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "BadRequestError" and error["code"] == 400
    assert fragment in error["message"]


async def test_a_body_that_is_not_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]
