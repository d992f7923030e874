"""The devcluster's addresses: everything lives in 127.0.0.0/8, which Linux routes locally.

Several devclusters may run on one machine at once (each test session starts one), so each claims
a *slot* ``k`` and keeps to its addresses:

- 127.0.0.1: the control plane (free ports), and the node's address (``status.hostIP``);
- pods: 127.k.1.1 - 127.k.255.254, one per pod (slot 0: 127.0.1.x ...), handed out by
  ``PodAddresses``;
- Services: 127.(100+k).0.0/16, the apiserver's ``--service-cluster-ip-range``, served by the
  userspace proxy; its first address is the ``kubernetes`` Service (slot 0: 127.100.0.1).

A slot is held by an exclusive ``flock`` on ``/tmp/tandem-devcluster-slots/<k>.lock`` for the life of
the supervisor process (the kernel drops it when the process ends, however it ends).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from tandem.devcluster.errors import DevClusterError

HOST_IP = "127.0.0.1"
KUBERNETES_SERVICE_PORT = 443
CLUSTER_DOMAIN = "cluster.local"
SLOTS = 50
_SLOT_LOCKS = Path("/tmp/tandem-devcluster-slots")


@dataclass(frozen=True)
class NetworkSlot:
    """The address ranges of one devcluster."""

    index: int

    @property
    def service_cidr(self) -> str:
        return f"127.{100 + self.index}.0.0/16"

    @property
    def kubernetes_service_ip(self) -> str:
        """The first address of the Service range: the apiserver gives it to ``kubernetes``."""
        return f"127.{100 + self.index}.0.1"

    @property
    def pod_first(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(f"127.{self.index}.1.1")

    @property
    def pod_last(self) -> ipaddress.IPv4Address:
        return ipaddress.IPv4Address(f"127.{self.index}.255.254")


def _bindable(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def claim_slot() -> tuple[NetworkSlot, int]:
    """The first free slot, and the open lock file that holds it (close it to give it back)."""
    _SLOT_LOCKS.mkdir(mode=0o755, exist_ok=True)
    for index in range(SLOTS):
        lock = os.open(_SLOT_LOCKS / f"{index}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            continue
        slot = NetworkSlot(index)
        # Something that does not take the lock may be using the range already.
        if _bindable(slot.kubernetes_service_ip, KUBERNETES_SERVICE_PORT):
            return slot, lock
        os.close(lock)
    raise DevClusterError(f"all {SLOTS} devcluster address slots are in use on this machine")


class PodAddresses:
    """Hands out a slot's pod IPs, lowest free first, skipping .0 and .255 last octets."""

    def __init__(self, slot: NetworkSlot) -> None:
        self._first = slot.pod_first
        self._last = slot.pod_last
        self._taken: set[ipaddress.IPv4Address] = set()

    def allocate(self) -> str:
        candidate = self._first
        while candidate <= self._last:
            if (int(candidate) & 0xFF) not in (0, 255) and candidate not in self._taken:
                self._taken.add(candidate)
                return str(candidate)
            candidate += 1
        raise DevClusterError(f"no pod IP left in {self._first} - {self._last}")

    def release(self, address: str) -> None:
        self._taken.discard(ipaddress.IPv4Address(address))
