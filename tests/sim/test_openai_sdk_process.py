"""A real simulator process, driven by the official OpenAI SDK's synchronous client: completions and
chat, plain and streamed (token by token, over time), usage, and the metrics they leave behind."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tandem.sim.testing import SimProcess, metric_value, sim_process

pytestmark = pytest.mark.slow

MODEL = "acme/sim-8b"
LABELS = {"model_name": MODEL, "engine": "0"}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    # vllm serve's shape, with arguments the simulator does not model: they are logged and ignored.
    with sim_process(
        MODEL, "--dtype", "bfloat16", "--trust-remote-code", "--decode-step-base-ms", "10"
    ) as sim:
        yield sim


@pytest.fixture(scope="module")
def client(sim: SimProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim.url}/v1", api_key="unused", max_retries=0)


def test_the_ignored_vllm_arguments_are_logged(sim: SimProcess) -> None:
    assert (
        "ignoring arguments the simulator does not model: --dtype bfloat16 --trust-remote-code" in sim.log()
    )


def test_a_streamed_completion_arrives_token_by_token(sim: SimProcess, client: openai.OpenAI) -> None:
    """One chunk per token, each from its own decode step (the engine counts 19 inter-token
    intervals for 20 tokens). How long the steps take is the timing model's, checked on a fake clock
    in sim/test_timing_model.py; the wall clock of this machine is not asserted."""
    plain = client.completions.create(model=MODEL, prompt="Stream me", max_tokens=20)
    intervals = scrape(sim, "vllm:inter_token_latency_seconds_count")
    texts = [
        chunk.choices[0].text
        for chunk in client.completions.create(model=MODEL, prompt="Stream me", max_tokens=20, stream=True)
    ]
    assert "".join(texts) == plain.choices[0].text
    assert len(texts) == 20
    assert scrape(sim, "vllm:inter_token_latency_seconds_count") == intervals + 19


def test_chat_plain_and_streamed_agree_and_report_usage(client: openai.OpenAI) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "Hello there"}
    ]
    plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=8, stream=True, stream_options={"include_usage": True}
        )
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        == plain.choices[0].message.content
    )
    assert plain.usage is not None and chunks[-1].usage == plain.usage
    assert plain.choices[0].finish_reason == "length"


def scrape(sim: SimProcess, name: str, **labels: str) -> float:
    """A vLLM metric of the process; 0 for a labelled counter not yet seen."""
    try:
        return metric_value(httpx.get(f"{sim.url}/metrics").text, name, **labels, **LABELS)
    except KeyError:
        return 0.0


def test_metrics_count_what_was_served(sim: SimProcess, client: openai.OpenAI) -> None:
    before = scrape(sim, "vllm:request_success_total", finished_reason="length")
    tokens = scrape(sim, "vllm:generation_tokens_total")
    client.completions.create(model=MODEL, prompt="Count", max_tokens=5)
    assert scrape(sim, "vllm:request_success_total", finished_reason="length") == before + 1
    assert scrape(sim, "vllm:generation_tokens_total") == tokens + 5


def wait_for_abort(sim: SimProcess, aborted_before: float) -> None:
    deadline = time.monotonic() + 5
    while scrape(sim, "vllm:request_success_total", finished_reason="abort") == aborted_before:
        assert time.monotonic() < deadline, "the engine never aborted the request"
        time.sleep(0.05)
    assert scrape(sim, "vllm:num_requests_running") == 0


def test_a_client_leaving_a_stream_aborts_its_request(sim: SimProcess) -> None:
    before = scrape(sim, "vllm:request_success_total", finished_reason="abort")
    body = {"prompt": "Long story", "max_tokens": 500, "stream": True}
    with httpx.stream("POST", f"{sim.url}/v1/completions", json=body) as response:
        lines = response.iter_lines()
        next(lines)
    wait_for_abort(sim, before)


def test_a_client_giving_up_on_a_plain_request_aborts_it(sim: SimProcess) -> None:
    before = scrape(sim, "vllm:request_success_total", finished_reason="abort")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{sim.url}/v1/completions", json={"prompt": "Long story", "max_tokens": 500}, timeout=0.3)
    wait_for_abort(sim, before)
