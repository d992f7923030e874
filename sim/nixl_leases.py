"""vLLM 0.33 NIXL block leases on a prefiller, without I/O: every time is passed in (``now``).

Paths are in vLLM 0.33's ``distributed/kv_transfer/kv_connector/v1/nixl/``:

- a prefill that finished on the length cap or a stop (EOS, stop string) keeps its blocks for
  ``kv_lease_duration`` seconds (extra config, default 30; ``base_scheduler.py`` 82-86,
  ``pull_scheduler.py`` 191-293);
- a decoder holding a decode leg for it sends heartbeats every ``kv_lease_duration // 6`` seconds
  (``base_scheduler.py`` 88, 513-518) until its read is done (``update_connector_output``, 528-531);
  each moves the lease's expiry to ``max(expiry, now + kv_lease_duration * 2 // 3)``
  (``base_worker.py`` 627-631, ``_handle_heartbeat`` 3380-3399);
- an expired lease frees the blocks (``_reap_expired_send_leases``, 3352-3378); a read of freed
  blocks still "succeeds" and gets whatever they hold now (``pull_worker.py`` 668-681 only logs it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class LeaseTerms:
    """A lease's durations in (simulated) seconds."""

    duration_s: float
    extension_s: float
    heartbeat_s: float

    @classmethod
    def of(cls, kv_lease_duration: int, speed: float) -> LeaseTerms:
        """vLLM's integer arithmetic on ``kv_lease_duration``, then ``--speed``."""
        return cls(
            kv_lease_duration / speed, kv_lease_duration * 2 // 3 / speed, kv_lease_duration // 6 / speed
        )


@dataclass
class Lease:
    """The blocks one finished prefill holds for a decoder."""

    digest: str  # of the prompt the blocks hold
    num_tokens: int
    block_ids: list[list[int]]  # one list per KV-cache group
    expires: float


class Leases:
    """The prefiller's held requests by request id, and when each lease runs out."""

    def __init__(self, terms: LeaseTerms) -> None:
        self.terms = terms
        self._leases: dict[str, Lease] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def grant(
        self, request_id: str, digest: str, num_tokens: int, block_ids: list[list[int]], now: float
    ) -> Lease:
        lease = Lease(digest, num_tokens, block_ids, now + self.terms.duration_s)
        self._leases[request_id] = lease
        return lease

    def get(self, request_id: str) -> Lease | None:
        return self._leases.get(request_id)

    def end(self, request_id: str) -> Lease | None:
        """The decoder finished reading: the lease ends (its blocks are freed by the caller)."""
        return self._leases.pop(request_id, None)

    def renew(self, request_ids: Iterable[str], now: float) -> int:
        """A heartbeat: extend the named leases still held; how many were."""
        renewed = 0
        for request_id in request_ids:
            lease = self._leases.get(request_id)
            if lease is not None:
                lease.expires = max(lease.expires, now + self.terms.extension_s)
                renewed += 1
        return renewed

    def expire_all(self, now: float) -> None:
        for lease in self._leases.values():
            lease.expires = min(lease.expires, now)

    def reap(self, now: float) -> list[str]:
        """End and return the leases that have run out."""
        expired = [request_id for request_id, lease in self._leases.items() if now >= lease.expires]
        for request_id in expired:
            del self._leases[request_id]
        return expired

    def next_expiry(self) -> float | None:
        return min((lease.expires for lease in self._leases.values()), default=None)
