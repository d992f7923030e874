"""The router's errors: one hierarchy, each with the HTTP status and OpenAI error type it maps to.

    RouterError
    ├── BadRequestError (400)            the client's body or headers are wrong
    │   ├── PayloadTooLargeError (413)   the body is over the limit
    │   ├── RequestTimeoutError (408)    the head or body came too slowly   } answered by the server
    │   ├── UriTooLongError (414)        the URL is over the head's limit   } (server.py), which
    │   └── HeadersTooLargeError (431)   too many headers, or their bytes   } closes the connection
    ├── UnauthorizedError (401)
    ├── NotFoundError (404), MethodNotAllowedError (405)
    ├── ModelNotFoundError (404)         no pool serves the requested model
    ├── QueueFullError (429)             admission queue at its bound; carries Retry-After
    ├── TokenBudgetError (429)           the API key's token budget is spent; Retry-After
    ├── NoEligibleEndpointError (503)    the decision found nothing to route to; carries the reason
    ├── NotServingError (503)            starting up or shutting down
    ├── EngineRejectedError (engine's)   an engine refused the request (4xx): its answer, relayed
    └── BackendError (502)               an engine failed us; the client sees no engine address
        ├── BackendUnreachableError      no connection, closed before answering, or 503
        ├── EngineServerError            answered 5xx
        ├── EngineTimeoutError (504)     no first byte, or a stream fell silent, in the pool's time
        ├── PrefillFailedError           the prefill leg of a handoff failed: fall back or retry
        └── HandoffTimeoutError (504)    KV notifications did not all arrive in time

A BackendError that names its endpoint (`url`) carries how it failed (`failure`, a `Failure`):
outlier detection counts it against the endpoint (router/outlier.py), and one raised before any
byte reached the client is retried on another endpoint. Lower-layer errors (aiohttp, zmq) are
translated with ``raise ... from exc`` where they are caught. This module imports nothing but the
standard library, so the pure decision code may raise these.
"""

from __future__ import annotations

import json
from enum import StrEnum


class RouterError(Exception):
    status: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param  # the request field at fault, as OpenAI and vLLM name it

    def headers(self) -> dict[str, str]:
        return {}

    def public_message(self) -> str:
        """The message the client sees."""
        return self.message

    def body(self) -> bytes:
        """The OpenAI-style error body."""
        error = {
            "message": self.public_message(),
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }
        return json.dumps({"error": error}).encode()


class BadRequestError(RouterError):
    status = 400
    error_type = "invalid_request_error"


class PayloadTooLargeError(BadRequestError):
    status = 413


# Answered by the server's protocol (server.py), which then closes the connection.


class RequestTimeoutError(BadRequestError):
    status = 408


class UriTooLongError(BadRequestError):
    status = 414


class HeadersTooLargeError(BadRequestError):
    status = 431


class UnauthorizedError(RouterError):
    status = 401
    error_type = "authentication_error"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ModelNotFoundError(RouterError):
    status = 404
    error_type = "invalid_request_error"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist.", code="model_not_found")


class QueueFullError(RouterError):
    status = 429
    error_type = "rate_limit_error"

    def __init__(self, pool: str, retry_after_s: int) -> None:
        super().__init__(f"Pool {pool} is at capacity; retry later.", code="queue_full")
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class TokenBudgetError(RouterError):
    """OpenAI's answer to a spent tokens-per-period limit: type `tokens`, code `rate_limit_exceeded`."""

    status = 429
    error_type = "tokens"

    def __init__(self, message: str, *, retry_after_s: int | None) -> None:
        super().__init__(message, code="rate_limit_exceeded")
        self.retry_after_s = retry_after_s  # None: no wait would do (the request exceeds the budget)

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}


class Ineligibility(StrEnum):
    """Why no endpoint (or no handoff pair) could be chosen."""

    NO_DECODE = "no_decode_endpoint"
    NO_PREFILL = "no_prefill_endpoint"
    PREFILL_SATURATED = "prefill_saturated"
    PD_BUFFER_FULL = "decode_pd_buffer_full"
    PREFILL_FAILED = "prefill_failed"


class Failure(StrEnum):
    """How an endpoint failed a request."""

    CONNECT = "connect"  # no connection, closed before answering, answered 503, /metrics failed
    BROKE = "broke"  # closed in the middle of its answer
    ERROR = "error"  # answered 5xx, or something that is not an answer
    TIMEOUT = "timeout"  # no first byte, a silent stream, a prefill over its time
    NO_NOTIFICATION = "no_notification"  # a prefiller whose KV notifications did not all arrive


class NoEligibleEndpointError(RouterError):
    status = 503
    error_type = "service_unavailable"

    def __init__(self, reason: Ineligibility, detail: str = "") -> None:
        super().__init__(
            f"No eligible endpoint: {reason.value}{': ' + detail if detail else ''}", code=reason.value
        )
        self.reason = reason
        self.detail = detail

    def after(self, failure: RouterError) -> NoEligibleEndpointError:
        """The same refusal, naming the failure that left nothing else to try."""
        return NoEligibleEndpointError(
            self.reason, f"{self.detail + '; ' if self.detail else ''}after {failure.public_message()}"
        )


class NotServingError(RouterError):
    status = 503
    error_type = "service_unavailable"


class NotFoundError(RouterError):
    status = 404
    error_type = "invalid_request_error"


class MethodNotAllowedError(RouterError):
    status = 405
    error_type = "invalid_request_error"


class BackendError(RouterError):
    """The message names engines (addresses, handoff ids): for logs. The client's body says only
    what failed, by its code."""

    status = 502
    error_type = "upstream_error"

    def __init__(
        self, message: str, *, code: str | None = None, url: str | None = None, failure: Failure | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.url = url  # the endpoint that failed, when it is one endpoint's failure
        self.failure = failure

    def public_message(self) -> str:
        how = f", {self.failure.value}" if self.failure is not None else ""
        return f"The engine serving this request failed ({self.code}{how})."


class EngineRejectedError(RouterError):
    """An engine's own 4xx answer (prompt too long, bad sampling parameter): the client's fault."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(body.decode(errors="replace")[:200], code="engine_rejected")
        self.status = status
        self._body = body

    def body(self) -> bytes:
        return self._body


class BackendUnreachableError(BackendError):
    """Nothing came back from the endpoint: another endpoint may serve the request."""

    def __init__(self, url: str, detail: str) -> None:
        message = f"Engine {url} unreachable: {detail}"
        super().__init__(message, code="backend_unreachable", url=url, failure=Failure.CONNECT)


class EngineServerError(BackendError):
    """The engine answered 5xx (503 is BackendUnreachableError: the engine says it cannot serve)."""

    def __init__(self, url: str, status: int) -> None:
        message = f"Engine {url} answered {status}"
        super().__init__(message, code="engine_error", url=url, failure=Failure.ERROR)


class EngineTimeoutError(BackendError):
    """The engine sent nothing for longer than the pool allows (its `router.timeouts`)."""

    status = 504

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"Engine {url}: {detail}", code="engine_timeout", url=url, failure=Failure.TIMEOUT)


class PrefillFailedError(BackendError):
    def __init__(self, url: str, detail: str, *, failure: Failure) -> None:
        message = f"Prefill on {url} failed: {detail}"
        super().__init__(message, code="prefill_failed", url=url, failure=failure)


class HandoffTimeoutError(BackendError):
    """The prefiller `url` answered, but its KV notifications did not all arrive in time."""

    status = 504

    def __init__(self, req_id: str, got: int, want: int, *, url: str) -> None:
        super().__init__(
            f"KV handoff {req_id}: {got} of {want} notifications before the timeout",
            code="handoff_timeout",
            url=url,
            failure=Failure.NO_NOTIFICATION,
        )
