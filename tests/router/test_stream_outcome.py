"""Whether a relayed stream ended in an error: the outcome its metrics record, and whether the
request counts as a success for outlier detection."""

from __future__ import annotations

import pytest

from tandem.router.errors import EngineTimeoutError
from tandem.router.sse import DONE, ends_with_error, error_event

TOKEN = b'data: {"choices":[{"text":"hi"}]}\n\n'
# vLLM's own error event: json.dumps(ErrorResponse.model_dump())
# (vllm/entrypoints/generate/base/serving.py, create_streaming_error_response), then [DONE]
# (vllm/entrypoints/openai/completion/serving.py, completion_stream_generator).
VLLM_ERROR = b'data: {"error": {"message": "Internal server error", "type": "InternalServerError"}}\n\n'


@pytest.mark.parametrize(
    ("tail", "error"),
    [
        pytest.param(TOKEN + DONE, False, id="finished"),
        pytest.param(TOKEN, False, id="no-done-yet-no-error"),
        pytest.param(TOKEN + error_event(EngineTimeoutError("http://e", "silent for 60 s")), True, id="ours"),
        pytest.param(TOKEN + VLLM_ERROR + DONE, True, id="vllm-error-then-done-one-chunk"),
        pytest.param(VLLM_ERROR + DONE, True, id="vllm-error-then-done-two-chunks"),
        pytest.param(DONE, False, id="done-alone"),
        pytest.param(b"", False, id="empty"),
    ],
)
def test_ends_with_error(tail: bytes, error: bool) -> None:
    assert ends_with_error(tail) is error
