"""The seam between the engine and a KV-handoff protocol, shaped like vLLM's KV connector.

The engine asks its connector, per request: may these ``kv_transfer_params`` run here
(:meth:`~KVConnector.validate`), which prompt KV arrives from elsewhere (:meth:`~KVConnector.load`,
before the request is scheduled), the prompt's KV is computed (:meth:`~KVConnector.on_prefill_done`,
where a producer starts sending), and the request finished (:meth:`~KVConnector.request_finished`:
the ``kv_transfer_params`` of the response, and whether its blocks stay held for a remote reader).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tandem.sim.stopping import FinishReason, StopRules


class RequestError(ValueError):
    """A request the engine refuses (HTTP 400)."""


@dataclass(frozen=True)
class EngineRequest:
    request_id: str  # unique inside this engine
    prompt: list[int] = field(repr=False)
    rules: StopRules
    kv_transfer_params: dict[str, Any] | None = None


@dataclass(frozen=True)
class LoadedKV:
    """Prompt KV that arrived from another engine."""

    tokens: int = 0  # leading prompt tokens covered
    corrupt: bool = False  # read while still being written: the answer will be garbage


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

    async def load(self, request: EngineRequest, *, continuation: bool) -> LoadedKV:
        """``continuation``: the prompt ends with generated text (the shape of a decode leg)."""

    def on_prefill_done(self, request: EngineRequest, first_token: int) -> Awaitable[object] | None:
        """The prompt's KV is computed; an awaitable delays the response until the handoff settles."""

    def request_finished(self, request: EngineRequest, reason: FinishReason) -> FinishedHandoff: ...


class NoConnector:
    """An engine without ``--kv-transfer-config``: ``kv_transfer_params`` are ignored, as vLLM does."""

    async def start(self, held: HeldBlocks) -> None:
        return None

    async def stop(self) -> None:
        return None

    def validate(self, request: EngineRequest) -> None:
        return None

    async def load(self, request: EngineRequest, *, continuation: bool) -> LoadedKV:
        return LoadedKV()

    def on_prefill_done(self, request: EngineRequest, first_token: int) -> Awaitable[object] | None:
        return None

    def request_finished(self, request: EngineRequest, reason: FinishReason) -> FinishedHandoff:
        return FinishedHandoff()
