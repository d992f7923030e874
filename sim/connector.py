"""The seam between the engine and a KV-handoff protocol, shaped like vLLM's KV connector.

The engine asks its connector, per request: may these ``kv_transfer_params`` run here
(:meth:`~KVConnector.validate`), which prompt KV arrives from elsewhere (:meth:`~KVConnector.load`,
before the request is scheduled), the prompt's KV is computed (:meth:`~KVConnector.on_prefill_done`,
where a producer starts sending), and the request finished (:meth:`~KVConnector.request_finished`:
the ``kv_transfer_params`` of the response, and whether its blocks stay held for a remote reader).
Each connector the simulator models is a :class:`SimulatedConnector` in
:mod:`tandem.sim.kv_connectors`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tandem.sim.stopping import FinishReason, StopRules

if TYPE_CHECKING:
    from tandem.sim.faults import FaultState
    from tandem.sim.metrics import SimMetrics
    from tandem.sim.settings import SimSettings


class RequestError(ValueError):
    """A request the engine refuses (HTTP 400)."""


@dataclass(frozen=True)
class EngineRequest:
    request_id: str  # unique inside this engine
    prompt: list[int] = field(repr=False)
    rules: StopRules
    kv_transfer_params: dict[str, Any] | None = None
    trace_headers: Mapping[str, str] | None = None  # W3C traceparent/tracestate, as vLLM keeps them


@dataclass(frozen=True)
class LoadedKV:
    """Prompt KV that arrived from another engine."""

    tokens: int = 0  # leading prompt tokens covered
    load_ms_per_token: float = 0.0  # what loading each of them beyond the engine's own hit costs
    corrupt: bool = False  # read while being written, or after it was freed: the answer is garbage
    failed: bool = False  # the load failed and the policy fails the request (finish_reason "error")


@dataclass(frozen=True)
class FinishedHandoff:
    kv_transfer_params: dict[str, Any] | None = None
    hold_blocks: bool = False  # keep the request's KV blocks until a remote reader releases them


class HeldBlocks(Protocol):
    """What a connector may do to the engine's memory: free blocks held for a remote reader."""

    def release(self, request_id: str) -> bool: ...


class KVConnector(Protocol):
    async def start(self, held: HeldBlocks) -> None: ...

    async def stop(self) -> None: ...

    def validate(self, request: EngineRequest) -> None:
        """Raise :class:`RequestError` for ``kv_transfer_params`` this engine cannot serve."""

    async def load(self, request: EngineRequest, *, continuation: bool, cached_tokens: int) -> LoadedKV:
        """``continuation``: the prompt ends with generated text (the shape of a decode leg);
        ``cached_tokens``: the engine's own prefix-cache hit for the prompt."""

    def on_prefill_done(self, request: EngineRequest, first_token: int) -> Awaitable[object] | None:
        """The prompt's KV is computed; an awaitable stalls the engine (its forward pass) until done."""

    def request_finished(self, request: EngineRequest, reason: FinishReason) -> FinishedHandoff: ...

    def buffer_state(self) -> dict[str, Any] | None:
        """The KV receive buffer's state for ``GET /admin/pd_buffer``; None: this end has none."""


class NoConnector:
    """An engine without ``--kv-transfer-config``: ``kv_transfer_params`` are ignored, as vLLM does."""

    async def start(self, held: HeldBlocks) -> None:
        return None

    async def stop(self) -> None:
        return None

    def validate(self, request: EngineRequest) -> None:
        return None

    async def load(self, request: EngineRequest, *, continuation: bool, cached_tokens: int) -> LoadedKV:
        return LoadedKV()

    def on_prefill_done(self, request: EngineRequest, first_token: int) -> Awaitable[object] | None:
        return None

    def request_finished(self, request: EngineRequest, reason: FinishReason) -> FinishedHandoff:
        return FinishedHandoff()

    def buffer_state(self) -> dict[str, Any] | None:
        return None


def _no_check(settings: SimSettings) -> None:
    return None


@dataclass(frozen=True)
class SimulatedConnector:
    """A KV connector the simulator models, by the name vLLM gives it."""

    vllm_name: str | None  # ``kv_connector`` of ``--kv-transfer-config``; None: the flag is absent
    build: Callable[[SimSettings, SimMetrics, FaultState], KVConnector]  # the engine's end of it
    check: Callable[[SimSettings], None] = _no_check  # raises ValueError for settings it cannot run


NO_KV_TRANSFER = SimulatedConnector(None, lambda settings, metrics, faults: NoConnector())
