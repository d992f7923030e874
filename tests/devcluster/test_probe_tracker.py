"""Probe verdicts from consecutive results, with Kubernetes' thresholds and defaults."""

from __future__ import annotations

import pytest
from kubernetes_asyncio.client import V1ContainerPort, V1Probe

from tandem.devcluster.probes import ProbeTiming, ProbeTracker, resolve_port


def test_defaults_are_kubernetes_defaults() -> None:
    assert ProbeTiming.of(V1Probe()) == ProbeTiming(0.0, 10.0, 1.0, 1, 3)


def test_a_polled_timing_probes_more_often_and_fails_after_as_long() -> None:
    engine_startup = ProbeTiming(0, 10, 5, success_threshold=1, failure_threshold=180)
    polled = engine_startup.polled(0.5)
    assert (polled.period, polled.failure_threshold) == (0.5, 3600)
    assert (polled.initial_delay, polled.timeout, polled.success_threshold) == (0, 5, 1)
    assert (
        polled.period * polled.failure_threshold == engine_startup.period * engine_startup.failure_threshold
    )
    assert ProbeTiming(0, 7, 1, 1, 3).polled(2).failure_threshold == 11  # rounded up: never sooner
    assert engine_startup.polled(None) == engine_startup
    assert ProbeTiming(0, 1, 1, 1, 3).polled(2) == ProbeTiming(0, 1, 1, 1, 3)  # never slower


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
