"""Probe verdicts from consecutive results, with Kubernetes' thresholds and defaults."""

from __future__ import annotations

import pytest
from kubernetes_asyncio.client import V1ContainerPort, V1Probe

from tandem.devcluster.probes import ProbeTiming, ProbeTracker, resolve_port


def test_defaults_are_kubernetes_defaults() -> None:
    assert ProbeTiming.of(V1Probe()) == ProbeTiming(0.0, 10.0, 1.0, 1, 3)


def test_verdict_needs_consecutive_results() -> None:
    tracker = ProbeTracker(ProbeTiming(0, 1, 1, success_threshold=2, failure_threshold=3))
    assert tracker.record(True) is None
    assert tracker.record(False) is None
    assert tracker.record(True) is None
    assert tracker.record(True) is True
    assert tracker.record(False) is True
    assert tracker.record(False) is True
    assert tracker.record(False) is False
    assert tracker.record(True) is False


def test_named_ports_resolve_through_the_container() -> None:
    ports = [V1ContainerPort(name="http", container_port=8000)]
    assert resolve_port("http", ports) == 8000
    assert resolve_port(9000, ports) == 9000
    assert resolve_port("9001", ports) == 9001
    with pytest.raises(ValueError, match="grpc"):
        resolve_port("grpc", ports)
