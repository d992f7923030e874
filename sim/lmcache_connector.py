"""LMCache PD handoff (``LMCacheConnectorV1``): what both ends share. The prefiller's end is
:mod:`tandem.sim.lmcache_sender`, the decoder's :mod:`tandem.sim.lmcache_receiver`.

A request's KV is cut into chunks (:mod:`tandem.sim.pd_buffer`) per worker rank. With an MLA model
only the first rank stores and sends its KV, under keys of world size 1 (``save_only_first_rank``,
default ``use_mla``: ``v1/token_database.py`` 114-120 and 238-245, ``v1/cache_engine.py`` 424-426),
so one ``ProxyNotif`` comes per request whatever the TP.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import msgspec

from tandem.sim.connector import EngineRequest, FinishedHandoff, RequestError
from tandem.sim.pd_buffer import ChunkKeys, chunk_keys, request_tags
from tandem.sim.settings import LMCacheConfig, SimSettings

CONNECTOR = "lmcache"
DTYPE = "bfloat16"  # two bytes per element; LMCache's name for torch.bfloat16 (utils.py 366-378)


class DisaggSpec(msgspec.Struct):
    """``kv_transfer_params.disagg_spec``: where the prefiller sends a request's KV."""

    req_id: str
    receiver_host: str
    receiver_init_port: list[int]
    receiver_alloc_port: list[int]


def parse_disagg_spec(params: dict[str, Any] | None, world_size: int) -> DisaggSpec | None:
    if not params or params.get("disagg_spec") is None:
        return None
    try:
        spec = msgspec.convert(params["disagg_spec"], DisaggSpec)
    except msgspec.ValidationError as exc:
        raise RequestError(f"kv_transfer_params.disagg_spec: {exc}") from exc
    if len(spec.receiver_init_port) < world_size or len(spec.receiver_alloc_port) < world_size:
        raise RequestError(
            f"kv_transfer_params.disagg_spec needs a receiver port per worker rank ({world_size})"
        )
    return spec


@dataclass(frozen=True)
class Layout:
    """How one process's KV is laid out: chunking, the ranks that store it, bytes."""

    model: str
    world_size: int
    chunk_size: int
    bytes_per_token_per_rank: int
    hash_seed: bytes
    discard_partial: bool
    first_rank_only: bool

    @classmethod
    def of(cls, settings: SimSettings, lmcache: LMCacheConfig) -> Layout:
        assert settings.kv_transfer_config is not None
        seed = settings.lmcache_hash_seed
        return cls(
            model=settings.model,
            world_size=settings.world_size,
            chunk_size=lmcache.chunk_size,
            bytes_per_token_per_rank=settings.kv_bytes_per_token // settings.world_size,
            hash_seed=os.urandom(8) if seed is None else seed.to_bytes(8, "little", signed=True),
            discard_partial=settings.kv_transfer_config.discard_partial_chunks,
            first_rank_only=lmcache.save_only_first_rank(settings.use_mla),
        )

    @property
    def storing_ranks(self) -> range:
        """The ranks that store (and send, and receive) KV: only the first with MLA."""
        return range(1) if self.first_rank_only else range(self.world_size)

    def keys(self, tokens: list[int], kv_transfer_params: dict[str, Any] | None) -> ChunkKeys:
        """The chunk keys of a request's tokens, tagged as its ``kv_transfer_params`` say."""
        return chunk_keys(
            tokens,
            self.chunk_size,
            self.hash_seed,
            discard_partial=self.discard_partial,
            tags=request_tags(kv_transfer_params),
        )

    def rank_keys(self, keys: ChunkKeys, rank: int) -> list[str]:
        # save_only_first_rank collapses the key's world size to 1 (token_database.py 238-245).
        return keys.for_rank(self.model, 1 if self.first_rank_only else self.world_size, rank, DTYPE)

    @property
    def chunk_bytes(self) -> int:
        return self.chunk_size * self.bytes_per_token_per_rank

    @property
    def chunk_shape(self) -> list[int]:
        # [K/V, layers, tokens, elements]: one "layer" of bfloat16 holding the rank's bytes per token.
        return [2, 1, self.chunk_size, max(1, self.bytes_per_token_per_rank // 4)]


class FirstTokens:
    """``ret_first_tok``: remember each request's first token for its response."""

    def __init__(self) -> None:
        self._first: dict[str, int] = {}

    def record(self, request: EngineRequest, token: int) -> None:
        if request.kv_transfer_params and "ret_first_tok" in request.kv_transfer_params:
            self._first[request.request_id] = token

    def finished(self, request: EngineRequest) -> FinishedHandoff:
        token = self._first.pop(request.request_id, None)
        return FinishedHandoff({"first_tok": token} if token is not None else None)
