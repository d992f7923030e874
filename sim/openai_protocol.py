"""OpenAI / vLLM request bodies, and how they become token ids and stop rules.

Fields vLLM accepts but the simulator does not model (temperature, top_p, seed, …) are accepted
and ignored, as vLLM ignores unknown fields. ``n > 1``, ``echo``, ``logprobs`` and batched prompts are
refused with 400 rather than answered wrongly. Errors are :class:`ApiError`: vLLM's status codes and
OpenAI's error body.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tandem.sim.chat_template import ChatTemplateError, render_chat
from tandem.sim.stopping import StopRules
from tandem.sim.tokenizer import Tokenizer

_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}


class ApiError(Exception):
    """An error answer: status code and message, rendered as OpenAI's error body."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": _error_type(self.status),
                "param": self.param,
                "code": self.status,
            }
        }


def _error_type(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    try:
        return HTTPStatus(status).phrase.replace(" ", "") + "Error"
    except ValueError:
        return "Error"


def bad_request(exc: ValidationError | ValueError) -> ApiError:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return ApiError(400, f"{where}: {first['msg']}" if where else first["msg"], where or None)
    return ApiError(400, str(exc))


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool | None = True
    continuous_usage_stats: bool | None = False


class _Sampling(BaseModel):
    """What completions and chat share."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    n: int = 1
    min_tokens: int = Field(default=0, ge=0)
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    kv_transfer_params: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def check_unsupported(self) -> None:
        if self.n != 1:
            raise ApiError(400, "the simulator serves n=1 only", "n")
        if self.stream_options is not None and not self.stream:
            raise ApiError(400, "Stream options can only be defined when `stream=True`.", "stream_options")


class CompletionRequest(_Sampling):
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = 16
    echo: bool = False
    logprobs: int | None = None

    def check_unsupported(self) -> None:
        super().check_unsupported()
        if self.echo:
            raise ApiError(400, "echo is not simulated", "echo")
        if self.logprobs is not None:
            raise ApiError(400, "logprobs are not simulated", "logprobs")

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else self.max_completion_tokens

    def prompt_ids(self, tokenizer: Tokenizer) -> list[int]:
        prompt: Any = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
            if len(prompt) != 1:
                raise ApiError(
                    400, "batched prompts are not simulated: send one prompt per request", "prompt"
                )
            prompt = prompt[0]
        if isinstance(prompt, str):
            return tokenizer.encode(prompt)
        return check_token_ids(prompt, tokenizer, "prompt")


class ChatCompletionRequest(_Sampling):
    messages: list[dict[str, Any]]
    add_generation_prompt: bool = True
    logprobs: bool = False

    def check_unsupported(self) -> None:
        super().check_unsupported()
        if self.logprobs:
            raise ApiError(400, "logprobs are not simulated", "logprobs")

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def prompt_ids(self, tokenizer: Tokenizer) -> list[int]:
        return chat_prompt_ids(self.messages, self.add_generation_prompt, tokenizer)


class TokenizeRequest(BaseModel):
    """``POST /tokenize``: a ``prompt`` or chat ``messages``."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_generation_prompt: bool = True
    return_token_strs: bool = False

    def prompt_ids(self, tokenizer: Tokenizer) -> list[int]:
        if self.messages is not None:
            return chat_prompt_ids(self.messages, self.add_generation_prompt, tokenizer)
        if self.prompt is None:
            raise ApiError(400, "tokenize needs a prompt or messages", "prompt")
        return tokenizer.encode(self.prompt)


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    tokens: list[int]


def chat_prompt_ids(
    messages: list[dict[str, Any]], add_generation_prompt: bool, tokenizer: Tokenizer
) -> list[int]:
    try:
        return tokenizer.encode(render_chat(messages, add_generation_prompt=add_generation_prompt))
    except ChatTemplateError as exc:
        raise ApiError(400, str(exc), "messages") from exc


def check_token_ids(tokens: list[int], tokenizer: Tokenizer, param: str) -> list[int]:
    for token in tokens:
        if not 0 <= token < tokenizer.vocab_size:
            raise ApiError(400, f"token id {token} is out of vocabulary (size {tokenizer.vocab_size})", param)
    return tokens


def max_new_tokens(requested: int | None, prompt_len: int, max_model_len: int) -> int:
    """The generation budget, refusing what cannot fit as vLLM does."""
    if prompt_len == 0:
        raise ApiError(400, "the prompt cannot be empty", "prompt")
    if requested is not None and requested < 1:
        raise ApiError(400, f"max_tokens must be at least 1, got {requested}.", "max_tokens")
    if prompt_len >= max_model_len or (requested is not None and prompt_len + requested > max_model_len):
        asked = prompt_len + (requested or 0)
        raise ApiError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. However, you requested {asked} "
            f"tokens ({prompt_len} in the messages, {requested or 0} in the completion). Please reduce the "
            "length of the messages or completion.",
            "max_tokens",
        )
    return requested if requested is not None else max_model_len - prompt_len


def stop_rules(request: CompletionRequest | ChatCompletionRequest, max_tokens: int) -> StopRules:
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    return StopRules(
        max_tokens=max_tokens,
        min_tokens=min(request.min_tokens, max_tokens),
        stop=tuple(s for s in stop if s),
        stop_token_ids=frozenset(request.stop_token_ids or ()),
        ignore_eos=request.ignore_eos,
        include_stop_str_in_output=request.include_stop_str_in_output,
    )
