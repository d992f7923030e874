"""Free ports for local servers that tests and the devcluster start.

A port the kernel hands out for ``bind(0)`` comes from its ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 by default), the same range every outgoing
connection takes its source port from. Released and bound again later, such a port is often taken
meanwhile by a connection of a busy machine (a devcluster makes thousands): "Address already in
use". The ports here come from below that range, which the kernel never gives to a connection;
each is checked free by binding it, and drawn at random so that processes looking at once (pytest
workers) rarely draw the same one.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_LOW = 32_768
ATTEMPTS = 200
# Handed out by this process: a port not bound yet is free to the next draw too, so one process
# starting several servers never gets the same port twice.
_HANDED_OUT: set[int] = set()


def _ephemeral_low() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_LOW


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now, outside the ephemeral range where
    the machine has room below it; else one the kernel picks."""
    high = _ephemeral_low()
    draw = random.SystemRandom()
    for _ in range(ATTEMPTS if high > LOWEST else 0):
        port = draw.randrange(LOWEST, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            _HANDED_OUT.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        chosen: int = probe.getsockname()[1]
        return chosen
