"""The LMCache tag a handoff's legs carry, leased per decoder: prompts that share a prefix share
their chunk keys, so a prefiller's offload tiers serve one handoff what an earlier one stored, and
two handoffs in flight to one decoder never share a chunk of its PD buffer.

Why a tag at all. LMCache 0.5.6 makes a request's `lmcache.tag.*` kv_transfer_params part of every
chunk key (lmcache/utils.py, CacheEngineKey: 428-475; integration/vllm/utils.py 130-151), and every
request a decoder serves looks its prompt up in the PD buffer and frees what it reads. Untagged, a
request prefilled on the decoder that starts with a handed-off chunk (a shared system prompt) read
that chunk, even half-written, and freed it; the handoff's own decode leg then found no leading
chunk, read nothing, and left the rest for good. A tagged chunk is found by tagged legs only.

What a tag shares. The key is `model@world_size@worker_id@chunk_hash@dtype@tandem_handoff%<tag>`,
the hash chained over every token up to the chunk's end, so one key is one prefix's KV wherever it
was computed. On a prefiller the tiers are looked up (integration/vllm/vllm_v1_adapter.py
1427-1435) and stored (1227-1235, `request_configs`) under those keys; a producer pushes every chunk
of its prompt whatever it found (`num_transferred_tokens` starts at 0: 91, 1176-1179).

Why per decoder. A decoder's receiver answers a key it already holds with its index in
`already_sent_indexes` and one more reference (v1/storage_backend/pd_backend_async.py,
`_async_allocate_and_put`, 1378: `contains(key, pin=True)`), and it holds a key from its allocation
on, before the write (`put`, 1479). The sender skips those chunks and notifies once its own writes
are done (`_check_and_send_proxy_notif`, 1003). So two handoffs in flight to one decoder under one tag with a
common prefix: the second's decode leg reads the first's chunks while they may still be written
(garbage), or after the first's sender gave up (a rolled-back allocation or `CancelNotif` drops the
first's reference, leaving a chunk nobody writes). A decoder's handoffs in flight therefore hold
different tag indexes: each takes the lowest one no other holds (`h0`, `h1`, ...).

When an index may serve again. Only once nothing of its handoff can still be on its way to the
decoder: the prefill never ran (nothing sent), or every notification came (every write done).
Chunks such a handoff left unread (a drain leg the decoder failed) are whole and are the same
prefix's KV, so a later handoff under the same tag reading them gets the right KV, and LMCache
counts the reference its allocation pinned. A handoff that ended otherwise (given up, or read
without all its notifications) may still have writes, rollbacks or cancellations on their way, so
its index is *retired*: never leased again for that decoder by this router process.

Why a namespace. The pool's router replicas do not see each other's leases, and a router that
restarts forgets its own while its handoffs' KV may still be on its way: each process draws a
namespace of its own (`new_namespace`), the prefix of every tag it leases. Prefix reuse from the
tiers is therefore per router process.
"""

from __future__ import annotations

import heapq
import secrets
from dataclasses import dataclass, field

KV_TAG = "lmcache.tag.tandem_handoff"
NAMESPACE_BYTES = 8  # 16 hex digits: two processes drawing the same namespace is a 2**-64 chance
# LMCache's key string separates its fields with "@" and a tag's name from its value with "%"
# (utils.py, CacheEngineKey.to_string / from_string): a tag value must hold neither.
_SEPARATORS = frozenset("@%")


def new_namespace() -> str:
    """A namespace for this router process's tags."""
    return secrets.token_hex(NAMESPACE_BYTES)


@dataclass(slots=True)
class _Decoder:
    fresh: int = 0  # the lowest index never leased
    free: list[int] = field(default_factory=list)  # a heap of released indexes, all below `fresh`
    held: int = 0

    @property
    def pristine(self) -> bool:
        """Every index below `fresh` is free again: nothing held, nothing retired."""
        return self.held == 0 and len(self.free) == self.fresh


class TagLeases:
    """The tag indexes this router holds on each decoder (keyed by the decoder's URL). Indexes
    below a decoder's lowest never-leased one are held, free again, or retired; only the free ones
    are kept, so retiring costs nothing but that the next fresh index is higher."""

    def __init__(self, namespace: str) -> None:
        if not namespace or _SEPARATORS & set(namespace):
            raise ValueError(f"tag namespace {namespace!r} must be non-empty, without '@' or '%'")
        self.namespace = namespace
        self._decoders: dict[str, _Decoder] = {}

    def take(self, decoder: str) -> TagLease:
        """The lowest index on `decoder` that is neither held nor retired."""
        state = self._decoders.setdefault(decoder, _Decoder())
        if state.free:
            index = heapq.heappop(state.free)
        else:
            index, state.fresh = state.fresh, state.fresh + 1
        state.held += 1
        return TagLease(self, decoder, index)

    def held(self, decoder: str) -> int:
        state = self._decoders.get(decoder)
        return 0 if state is None else state.held

    def _end(self, decoder: str, index: int, settled: bool) -> None:
        state = self._decoders[decoder]
        state.held -= 1
        if settled:
            heapq.heappush(state.free, index)
        if state.pristine:
            del self._decoders[decoder]  # as good as new: the next take starts at index 0 again


class TagLease:
    """One handoff's tag on one decoder. `end` is idempotent: a handoff ends it where its KV is read
    and again where it lets go of everything."""

    __slots__ = ("_leases", "decoder", "index", "value")

    def __init__(self, leases: TagLeases, decoder: str, index: int) -> None:
        self._leases: TagLeases | None = leases
        self.decoder = decoder
        self.index = index
        self.value = f"{leases.namespace}.h{index}"

    @property
    def params(self) -> dict[str, str]:
        """The `kv_transfer_params` entry of the handoff's prefill, decode and drain legs."""
        return {KV_TAG: self.value}

    def end(self, *, settled: bool) -> None:
        """`settled`: nothing of the handoff can still be on its way to the decoder (its prefill never
        ran, or every notification came), so the index may serve the next handoff; else it is retired."""
        if self._leases is not None:
            self._leases._end(self.decoder, self.index, settled)
            self._leases = None
