"""Free ports outside the kernel's ephemeral range (sim/ports.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tandem.sim import ports


def test_ports_come_from_below_the_ephemeral_range_and_are_free() -> None:
    low = ports._ephemeral_low()
    listed = [ports.free_port() for _ in range(200)]
    drawn = set(listed)
    assert all(ports.LOWEST <= port < low for port in drawn)
    assert len(drawn) == len(listed)  # never the same twice in one process (CI's soak drew one twice)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", drawn.pop()))  # free indeed


def test_a_machine_without_room_below_the_range_gets_a_port_the_kernel_picks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    narrow = tmp_path / "ip_local_port_range"
    narrow.write_text("1024\t65535\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", narrow)
    assert 1024 <= ports.free_port() <= 65535
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", tmp_path / "absent")
    assert ports._ephemeral_low() == ports.DEFAULT_EPHEMERAL_LOW
