"""The devcluster's addresses: everything lives in 127.0.0.0/8, which Linux routes locally.

- 127.0.0.1: the control plane, and the node's address (``status.hostIP``);
- 127.0.1.1 - 127.0.255.254: pod IPs, one per pod, handed out by ``PodAddresses``;
- 127.100.0.0/16: Service ClusterIPs (the apiserver's ``--service-cluster-ip-range``), served by the
  userspace proxy; 127.100.0.1 is the ``kubernetes`` Service.
"""

from __future__ import annotations

import ipaddress

HOST_IP = "127.0.0.1"
SERVICE_CIDR = "127.100.0.0/16"
KUBERNETES_SERVICE_IP = "127.100.0.1"
KUBERNETES_SERVICE_PORT = 443
CLUSTER_DOMAIN = "cluster.local"
_POD_FIRST = ipaddress.IPv4Address("127.0.1.1")
_POD_LAST = ipaddress.IPv4Address("127.0.255.254")


class PodAddresses:
    """Hands out pod IPs, lowest free first, skipping network (.0) and broadcast-like (.255) ends."""

    def __init__(self) -> None:
        self._taken: set[ipaddress.IPv4Address] = set()

    def allocate(self) -> str:
        candidate = _POD_FIRST
        while candidate <= _POD_LAST:
            last_octet = int(candidate) & 0xFF
            if last_octet not in (0, 255) and candidate not in self._taken:
                self._taken.add(candidate)
                return str(candidate)
            candidate += 1
        raise RuntimeError("no pod IP left in 127.0.1.0 - 127.0.255.255")

    def release(self, address: str) -> None:
        self._taken.discard(ipaddress.IPv4Address(address))
