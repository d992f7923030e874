"""The router's errors: one hierarchy, each with the HTTP status and OpenAI error type it maps to.

    RouterError
    ├── BadRequestError (400)            the client's body or headers are wrong
    │   └── PayloadTooLargeError (413)
    ├── UnauthorizedError (401)
    ├── NotFoundError (404), MethodNotAllowedError (405)
    ├── ModelNotFoundError (404)         no pool serves the requested model
    ├── QueueFullError (429)             admission queue at its bound; carries Retry-After
    ├── NoEligibleEndpointError (503)    the decision found nothing to route to; carries the reason
    ├── NotServingError (503)            starting up or shutting down
    ├── EngineRejectedError (engine's)   an engine refused the request (4xx): its answer, relayed
    └── BackendError (502)          an engine failed us
        ├── BackendUnreachableError      no connection or no answer before the first byte: retryable
        ├── PrefillFailedError           the prefill leg of a handoff failed: fall back or retry
        └── HandoffTimeoutError (504)    KV notifications did not all arrive in time

Lower-layer errors (aiohttp, zmq) are translated with ``raise ... from exc`` where they are caught.
This module imports nothing but the standard library, so the pure decision code may raise these.
"""

from __future__ import annotations

import json
from enum import StrEnum


class RouterError(Exception):
    status: int = 500
    error_type: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> bytes:
        """The OpenAI-style error body."""
        error = {"message": self.message, "type": self.error_type, "param": None, "code": self.code}
        return json.dumps({"error": error}).encode()


class BadRequestError(RouterError):
    status = 400
    error_type = "invalid_request_error"


class PayloadTooLargeError(BadRequestError):
    status = 413


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


class Ineligibility(StrEnum):
    """Why no endpoint (or no handoff pair) could be chosen."""

    NO_DECODE = "no_decode_endpoint"
    NO_PREFILL = "no_prefill_endpoint"
    PREFILL_SATURATED = "prefill_saturated"
    PD_BUFFER_FULL = "decode_pd_buffer_full"
    PREFILL_FAILED = "prefill_failed"


class NoEligibleEndpointError(RouterError):
    status = 503
    error_type = "service_unavailable"

    def __init__(self, reason: Ineligibility, detail: str = "") -> None:
        super().__init__(
            f"No eligible endpoint: {reason.value}{': ' + detail if detail else ''}", code=reason.value
        )
        self.reason = reason


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
    status = 502
    error_type = "upstream_error"


class EngineRejectedError(RouterError):
    """An engine's own 4xx answer (prompt too long, bad sampling parameter): the client's fault."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(body.decode(errors="replace")[:200], code="engine_rejected")
        self.status = status
        self._body = body

    def body(self) -> bytes:
        return self._body


class BackendUnreachableError(BackendError):
    """Nothing came back from the endpoint before the first byte: another endpoint may serve it."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"Engine {url} unreachable: {detail}", code="backend_unreachable")
        self.url = url


class PrefillFailedError(BackendError):
    def __init__(self, url: str, detail: str, *, unreachable: bool) -> None:
        super().__init__(f"Prefill on {url} failed: {detail}", code="prefill_failed")
        self.url = url
        self.unreachable = unreachable


class HandoffTimeoutError(BackendError):
    status = 504

    def __init__(self, req_id: str, got: int, want: int) -> None:
        super().__init__(
            f"KV handoff {req_id}: {got} of {want} notifications before the timeout", code="handoff_timeout"
        )
