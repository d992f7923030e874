"""LMCache PD bookkeeping without I/O: chunk keys, a decoder's receive buffer per worker rank, and
which chunks a decode leg reads. Facts from LMCache 0.5.6 (``lmcache/`` paths below) and the vLLM
integration that ships with it.

Chunk keys: the token ids are cut into ``chunk_size`` chunks (the last may be partial unless
``discard_partial_chunks``); chunk ``i``'s hash chains over all tokens up to its end and is keyed by
the hash seed (``PYTHONHASHSEED`` in LMCache: engines with different seeds never share a key). The
key string is LMCache's ``CacheEngineKey.to_string()`` (``utils.py`` 467-475):
``<model>@<world size>@<worker id>@<hash, hex>@<dtype>``, so ranks and world sizes never mix.

The buffer (``v1/storage_backend/pd_backend_async.py``, ``PDBackendAsync``) holds
``pd_buffer_size // chunk bytes`` chunks and **never evicts**:

- a chunk is allocated with one reference (``paged_tensor_memory_allocator.py`` 152) when an
  ``AllocRequest`` names its key; a key already held is *pinned* instead (one more reference,
  ``contains(key, pin=True)``, 638-656) and its index comes back in ``already_sent_indexes``;
- the only thing that drops a reference is ``remove()`` (1514-1535: freed at zero references),
  called when a decode leg *retrieves* the chunk (``cache_engine.py`` 194, 950-958,
  ``remove_after_retrieve``), when a sender cancels (``CancelNotif``) or when an allocation rolls
  back. A chunk no decode leg reads stays allocated until the decoder restarts;
- admission reserves a request's ``total_chunks`` up front (``ReservationManager``, 96-215), held
  until its last batch is allocated; a request bigger than the whole buffer is refused at once
  (1318-1326).

A decode leg reads only the chunks its lookup hit that vLLM's own prefix cache does not already
cover (:func:`plan_retrieval`): so chunks under the decoder's local prefix-cache hit are never read,
and never freed.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

ChunkState = Literal["absent", "writing", "ready"]


@dataclass(frozen=True)
class ChunkKeys:
    """The chunk hashes of one token sequence, the tokens each chunk covers, and the request's tags."""

    hashes: tuple[int, ...]
    lengths: tuple[int, ...]
    tags: tuple[tuple[str, str], ...] = ()

    def for_rank(self, model: str, world_size: int, worker_id: int, dtype: str) -> list[str]:
        """The keys as ``CacheEngineKey.to_string()`` writes them (``lmcache/utils.py`` 467-475):
        a tagged request's keys end with ``@name%value`` per tag, so they match only keys of
        requests with the same tags (``__eq__`` compares ``tags``, 456-464)."""
        tags = "".join(f"@{name}%{value}" for name, value in self.tags)
        return [f"{model}@{world_size}@{worker_id}@{h:x}@{dtype}{tags}" for h in self.hashes]


def request_tags(kv_transfer_params: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """A request's LMCache tags: its ``kv_transfer_params`` entries ``lmcache.tag.<name>``, in
    order (``integration/vllm/utils.py`` 130-151 keeps the ``lmcache.*`` entries as the request's
    configs; ``CacheEngineKey.__post_init__``, ``utils.py`` 428-440, makes the tags of them)."""
    prefix = "lmcache.tag."
    return tuple(
        (key.removeprefix(prefix), str(value))
        for key, value in (kv_transfer_params or {}).items()
        if key.startswith(prefix)
    )


def chunk_keys(
    tokens: Sequence[int],
    chunk_size: int,
    hash_seed: bytes,
    *,
    discard_partial: bool,
    tags: tuple[tuple[str, str], ...] = (),
) -> ChunkKeys:
    hashes: list[int] = []
    lengths: list[int] = []
    previous = b""
    end = len(tokens) - len(tokens) % chunk_size if discard_partial else len(tokens)
    for start in range(0, end, chunk_size):
        chunk = tokens[start : min(start + chunk_size, end)]
        digest = hashlib.blake2b(
            previous + array("q", chunk).tobytes(), digest_size=8, key=hash_seed
        ).digest()
        hashes.append(int.from_bytes(digest, "big"))
        lengths.append(len(chunk))
        previous = digest
    return ChunkKeys(tuple(hashes), tuple(lengths), tags)


def total_chunks(prompt_tokens: int, chunk_size: int) -> int:
    """The ``total_chunks`` a sender declares: ``ceil(prompt_len / chunk_size)``, whatever
    ``discard_partial_chunks`` says (``integration/vllm/vllm_v1_adapter.py`` 413-417)."""
    return -(-prompt_tokens // chunk_size)


@dataclass
class _Chunk:
    index: int
    refs: int = 1
    written: bool = False


class PDBuffer:
    """One worker rank's receive buffer on a decoder: chunks, references and reservations."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = list(range(capacity - 1, -1, -1))
        self._chunks: dict[str, _Chunk] = {}
        self._reservations: dict[str, int] = {}
        self._fault_held: list[int] = []
        self.reserved = 0

    @property
    def free(self) -> int:
        return len(self._free)

    @property
    def used(self) -> int:
        return self.capacity - len(self._free)

    @property
    def fault_held(self) -> int:
        return len(self._fault_held)

    def state(self, key: str) -> ChunkState:
        chunk = self._chunks.get(key)
        if chunk is None:
            return "absent"
        return "ready" if chunk.written else "writing"

    def counts(self) -> dict[ChunkState, int]:
        """How many keys are being written and how many are ready."""
        written = sum(chunk.written for chunk in self._chunks.values())
        return {"absent": 0, "writing": len(self._chunks) - written, "ready": written}

    def pin(self, key: str) -> bool:
        """``contains(key, pin=True)``: a held key gets one more reference; False when absent."""
        chunk = self._chunks.get(key)
        if chunk is None:
            return False
        chunk.refs += 1
        return True

    def allocate(self, key: str) -> int | None:
        """A free slot for ``key`` (one reference), or None when the buffer is full: no eviction.

        If ``key`` was put meanwhile (by another request while this one waited), LMCache's
        ``put()`` drops the new object (``pd_backend_async.py`` 1479-1493): its slot is free again
        and the sender writes into it for nothing.
        """
        if not self._free:
            return None
        index = self._free.pop()
        if key in self._chunks:
            self._free.append(index)
        else:
            self._chunks[key] = _Chunk(index)
        return index

    def remove(self, key: str) -> bool:
        """Drop one reference of ``key``; True when that freed its slot."""
        chunk = self._chunks.get(key)
        if chunk is None:
            return False
        chunk.refs -= 1
        if chunk.refs > 0:
            return False
        del self._chunks[key]
        self._free.append(chunk.index)
        return True

    def mark_written(self, keys: Sequence[str]) -> int:
        """Mark the still-allocated ``keys`` written; how many were."""
        count = 0
        for key in keys:
            chunk = self._chunks.get(key)
            if chunk is not None:
                chunk.written = True
                count += 1
        return count

    def reserve(self, req_id: str, chunks: int) -> bool:
        """Admit ``req_id`` if ``chunks`` are unreserved (``ReservationManager.async_try_admit``)."""
        if self.capacity - self.reserved < chunks:
            return False
        self._reservations[req_id] = chunks
        self.reserved += chunks
        return True

    def release_reservation(self, req_id: str) -> None:
        self.reserved -= self._reservations.pop(req_id, 0)

    def hold_for_fault(self, chunks: int) -> None:
        """Keep ``chunks`` slots allocated to nobody (as many as are free), as unread requests do."""
        while len(self._fault_held) > chunks:
            self._free.append(self._fault_held.pop())
        while len(self._fault_held) < chunks and self._free:
            self._fault_held.append(self._free.pop())


@dataclass(frozen=True)
class Retrieval:
    """What one decode leg's lookup and load do to the buffer."""

    hit_chunks: int  # leading lookup chunks the buffer holds (prefix match)
    hit_tokens: int  # the tokens they cover: the lookup's answer
    first_read: int  # chunks before this one are covered by vLLM's own prefix cache: not read

    @property
    def read(self) -> range:
        """The chunks retrieved, hence freed."""
        return range(self.first_read, self.hit_chunks)

    @property
    def loaded_tokens(self) -> int:
        return self.hit_tokens if self.read else 0


def plan_retrieval(
    lengths: Sequence[int], hit_chunks: int, local_cached: int, num_tokens: int, chunk_size: int
) -> Retrieval:
    """Which chunks a decode leg reads: those its lookup hit beyond vLLM's local prefix cache.

    ``local_cached`` is vLLM's prefix-cache hit in tokens (``num_computed_tokens``), ``num_tokens``
    the request's. LMCache loads nothing when it would add no token
    (``vllm_v1_adapter.py`` 1451-1455, 1527); otherwise it retrieves the hit prefix with the
    chunks under ``local_cached`` (rounded down to a chunk) masked out (818-823), and the token
    database skips masked chunks (``token_database.py`` 421): those are never read.
    """
    hit_tokens = sum(lengths[:hit_chunks])
    need = hit_tokens - local_cached - (1 if hit_tokens == num_tokens else 0)
    first = hit_chunks if need <= 0 else min(local_cached // chunk_size, hit_chunks)
    return Retrieval(hit_chunks, hit_tokens, first)
