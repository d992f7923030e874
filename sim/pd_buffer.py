"""LMCache PD bookkeeping without I/O: chunk keys, and a decoder's receive buffer per TP rank.

Chunk keys: the token ids are cut into ``chunk_size`` chunks (the last may be partial unless
``discard_partial_chunks``); chunk ``i``'s hash chains over all tokens up to its end and is keyed by
the hash seed (``PYTHONHASHSEED`` in LMCache: engines with different seeds never share a key). The
key string is shaped like LMCache's ``CacheEngineKey``: ``vllm@<model>@<world size>@<worker>@<hash>``,
so ranks and TP sizes never mix.

The buffer holds ``pd_buffer_size // (chunk_size * KV bytes per token per rank)`` chunks. An
allocation takes a slot per key or none at all (the caller answers -1); a slot is *writing* until
the sender reports the write done, then *ready*; the decode request that reads it frees it.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

ChunkState = Literal["absent", "writing", "ready"]


@dataclass(frozen=True)
class ChunkKeys:
    """The chunk hashes of one token sequence, and the tokens each chunk covers."""

    hashes: tuple[str, ...]
    lengths: tuple[int, ...]

    def for_rank(self, model: str, world_size: int, worker_id: int) -> list[str]:
        return [f"vllm@{model}@{world_size}@{worker_id}@{h}" for h in self.hashes]


def chunk_keys(
    tokens: Sequence[int], chunk_size: int, hash_seed: bytes, *, discard_partial: bool
) -> ChunkKeys:
    hashes: list[str] = []
    lengths: list[int] = []
    previous = b""
    end = len(tokens) - len(tokens) % chunk_size if discard_partial else len(tokens)
    for start in range(0, end, chunk_size):
        chunk = tokens[start : min(start + chunk_size, end)]
        digest = hashlib.blake2b(
            previous + array("q", chunk).tobytes(), digest_size=8, key=hash_seed
        ).digest()
        hashes.append(digest.hex())
        lengths.append(len(chunk))
        previous = digest
    return ChunkKeys(tuple(hashes), tuple(lengths))


@dataclass
class _Slot:
    index: int
    req_id: str
    ready: bool = False


class PDBuffer:
    """One TP rank's receive buffer on a decoder."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = list(range(capacity - 1, -1, -1))
        self._slots: dict[str, _Slot] = {}

    @property
    def free(self) -> int:
        return len(self._free)

    def allocate(self, keys: Sequence[str], req_id: str) -> list[int] | None:
        """Slot indexes for ``keys`` (a key already held is rewritten), or None when they do not fit."""
        self.release(keys)  # LMCache's put() frees an existing object under the same key
        if len(keys) > len(self._free):
            return None
        indexes = []
        for key in keys:
            slot = _Slot(self._free.pop(), req_id)
            self._slots[key] = slot
            indexes.append(slot.index)
        return indexes

    def mark_written(self, keys: Sequence[str]) -> int:
        """Mark the still-allocated ``keys`` ready; how many were."""
        count = 0
        for key in keys:
            slot = self._slots.get(key)
            if slot is not None:
                slot.ready = True
                count += 1
        return count

    def state(self, key: str) -> ChunkState:
        slot = self._slots.get(key)
        if slot is None:
            return "absent"
        return "ready" if slot.ready else "writing"

    def release(self, keys: Sequence[str]) -> None:
        for key in keys:
            slot = self._slots.pop(key, None)
            if slot is not None:
                self._free.append(slot.index)
