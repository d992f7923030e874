"""A pool's replicas over time: read from its Deployments as the operator labels them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from load_clock import VirtualClock

from tandem.api import InferencePool
from tandem.load.kube import KubernetesPool
from tandem.load.replicas import PoolError, ReplicaSample, poll_replicas, replica_samples


def deployment(name: str, role: str | None, replicas: int | None, ready: int | None) -> dict[str, Any]:
    labels = {"tandem.dev/pool": "chat", **({"tandem.dev/role": role} if role else {})}
    body: dict[str, Any] = {"metadata": {"name": name, "labels": labels}, "spec": {}, "status": {}}
    if replicas is not None:
        body["spec"]["replicas"] = replicas
    if ready is not None:
        body["status"]["readyReplicas"] = ready
    return body


def test_each_deployment_is_a_sample_by_role() -> None:
    deployments = [
        deployment("chat-decode", "decode", 3, 2),
        deployment("chat-prefill", "prefill", 2, None),  # none ready: the field is absent
        deployment("chat-router", None, None, 1),  # no role label; replicas defaults to 1
    ]
    assert replica_samples("chat", deployments, 4.0) == [
        ReplicaSample(4.0, "decode", 3, 2),
        ReplicaSample(4.0, "prefill", 2, 0),
        ReplicaSample(4.0, "router", 1, 1),
    ]


def test_the_labels_are_the_operators() -> None:
    from tandem.operator.naming import PoolRef, Role

    pool = PoolRef(name="chat", namespace="default", uid="u")
    labels = pool.engine_labels(Role.DECODE)
    body = {"metadata": {"name": pool.role_workload(Role.DECODE), "labels": labels}, "spec": {"replicas": 2}}
    assert replica_samples("chat", [body], 0.0) == [ReplicaSample(0.0, "decode", 2, 0)]
    assert replica_samples("chat", [{"metadata": {"name": pool.router}}], 0.0)[0].role == "router"


class Reader:
    """Two replicas of decode, then a failed read, then three."""

    name = "chat"

    def __init__(self) -> None:
        self.reads = 0

    async def resource(self) -> InferencePool:
        raise AssertionError("not read while polling")

    async def deployments(self) -> list[dict[str, Any]]:
        self.reads += 1
        if self.reads == 2:
            raise PoolError("cannot reach the API server")
        return [deployment("chat-decode", "decode", 2 if self.reads == 1 else 3, 2)]


async def test_polling_samples_every_interval_and_survives_a_failed_read() -> None:
    reader, samples = Reader(), []
    poller = asyncio.create_task(poll_replicas(reader, VirtualClock(), 0.5, samples))
    for _ in range(1000):
        if len(samples) >= 3:
            break
        await asyncio.sleep(0)
    poller.cancel()
    assert samples[:3] == [
        ReplicaSample(0.0, "decode", 2, 2),
        ReplicaSample(1.0, "decode", 3, 2),  # the read at 0.5 s failed
        ReplicaSample(1.5, "decode", 3, 2),
    ]


def test_no_credentials_is_a_clear_error(tmp_path: Path) -> None:
    async def connect() -> None:
        await KubernetesPool.connect("p", None, tmp_path / "missing-kubeconfig")

    with pytest.raises(PoolError, match="no Kubernetes credentials for pool p"):
        asyncio.run(connect())
