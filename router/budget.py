"""A handoff's length budget: how many tokens the answer may have, as one vLLM engine would count
them, so that the decode leg asks for exactly that and a request no engine would serve is refused
before its prefill (whose KV would otherwise wait in the decoder's buffer for a decode leg that
never comes).

vLLM 0.33.0 (the vllm 0.33.0 wheel's `vllm/`):
- The request's `max_tokens` (completions; 16 when absent, `entrypoints/openai/completion/protocol.py`)
  or, for chat, `max_completion_tokens`, else `max_tokens`, else nothing
  (`entrypoints/openai/chat_completion/serving.py`).
- More than `max_model_len` requested: 400 "`max_tokens=N cannot be greater than max_model_len=M.
  Please request fewer output tokens.`" naming the field (`renderers/params.py`,
  `TokenizeParams.__post_init__`; the chat protocol's `build_tok_params` picks the name).
- A prompt longer than the context: 400 "This model's maximum context length is M tokens. However,
  your prompt contains N input tokens, ..." (`renderers/params.py`, `_token_len_check`); exactly as
  long: 400 "The decoder prompt (length N) plus ..." (`v1/engine/input_processor.py`,
  `_validate_prompt_len`).
- Otherwise `min(requested, max_model_len - prompt)`, and without a request the whole rest of the
  context (`entrypoints/serve/utils/api_utils.py`, `get_max_tokens`): prompt plus request beyond the
  context is clamped, not refused.
A chat default from the model's `generation_config.json` (`max_new_tokens`) is not visible to the
router; such a model needs `max_tokens` in its requests for a handoff to end where the engine would.
"""

from __future__ import annotations

from tandem.router.client_request import ClientRequest, Kind
from tandem.router.decision.classify import estimate_prompt_tokens
from tandem.router.errors import BadRequestError

COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def _requested(request: ClientRequest) -> tuple[int | None, str]:
    """The tokens the client asked for (vLLM's default applied) and the field that asked."""
    if request.kind is Kind.COMPLETION:
        asked = request.max_tokens
        return (COMPLETIONS_DEFAULT_MAX_TOKENS if asked is None else asked), "max_tokens"
    field = "max_completion_tokens" if request.body.get("max_completion_tokens") is not None else "max_tokens"
    return request.max_tokens, field


def requested_tokens(request: ClientRequest) -> int | None:
    """The answer tokens the client asked for (vLLM's completions default applied); None: no limit
    (chat: the rest of the context)."""
    return _requested(request)[0]


def prompt_estimate(request: ClientRequest) -> int:
    """The prompt's tokens before any /tokenize: its token ids, or the cheap estimate."""
    ids = request.prompt_ids
    return len(ids) if ids is not None else estimate_prompt_tokens(len(request.prompt_text))


def estimated_tokens(request: ClientRequest) -> int:
    """The prompt's estimate and the answer tokens the request asks for (none for a chat request
    without a limit): what a key's token budget is charged."""
    return prompt_estimate(request) + (requested_tokens(request) or 0)


def answer_budget(request: ClientRequest, prompt_tokens: int, max_model_len: int) -> int:
    """Tokens the answer may have; BadRequestError (vLLM's message) where the engine answers 400."""
    asked, field = _requested(request)
    if asked is not None and asked > max_model_len:
        raise BadRequestError(
            f"{field}={asked} cannot be greater than max_model_len={max_model_len}. "
            "Please request fewer output tokens.",
            code="context_length_exceeded",
            param=field,
        )
    if prompt_tokens > max_model_len:
        raise BadRequestError(
            f"This model's maximum context length is {max_model_len} tokens. However, your prompt "
            f"contains {prompt_tokens} input tokens, which exceeds this limit even without any output "
            "tokens. Please reduce the length of the input prompt.",
            code="context_length_exceeded",
            param="input_tokens",
        )
    if prompt_tokens == max_model_len:
        raise BadRequestError(
            f"The decoder prompt (length {prompt_tokens}) plus the number of requested output tokens "
            f"(at least 1) is longer than the maximum model length of {max_model_len}. Make sure that "
            "`max_model_len` is no smaller than the number of text tokens (prompt + requested output "
            "tokens).",
            code="context_length_exceeded",
        )
    room = max_model_len - prompt_tokens
    return room if asked is None else min(asked, room)
