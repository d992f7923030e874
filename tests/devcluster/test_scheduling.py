"""Placement on the devcluster's one node: GPU pods fit, unmatched nodeSelectors stay Pending."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tandem.devcluster.testing import pod_phase, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_devcluster")]


def sleeper(name: str, container: dict[str, Any] | None = None, **spec: Any) -> client.V1Pod:
    main = {"name": "main", "image": "busybox", "command": ["sleep", "300"], **(container or {})}
    return client.V1Pod.model_validate(
        {
            "metadata": {"name": name},
            "spec": {"containers": [main], "terminationGracePeriodSeconds": 1, **spec},
        }
    )


def test_gpu_pod_lands_on_the_node_that_offers_gpus(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    [node] = core.list_node().items
    assert node.status is not None and node.metadata is not None
    assert (node.status.allocatable or {})["nvidia.com/gpu"] == "8"
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    gpus = {"limits": {"nvidia.com/gpu": "2"}, "requests": {"nvidia.com/gpu": "2"}}
    core.create_namespaced_pod(namespace, sleeper("gpu", container={"resources": gpus}))

    running = wait_for(
        lambda: pod if pod_phase(pod := core.read_namespaced_pod("gpu", namespace)) == "Running" else None,
        message="the GPU pod Running",
    )
    assert running.spec is not None
    assert running.spec.node_name == node.metadata.name


def test_unmatched_node_selector_leaves_the_pod_pending_with_the_reason(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    selector = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    core.create_namespaced_pod(namespace, sleeper("picky", nodeSelector=selector))

    def unschedulable() -> client.V1PodCondition | None:
        status = core.read_namespaced_pod("picky", namespace).status
        conditions = (status.conditions if status else None) or []
        return next((c for c in conditions if c.type == "PodScheduled" and c.reason == "Unschedulable"), None)

    condition = wait_for(unschedulable, message="PodScheduled=False (Unschedulable) on the picky pod")
    assert condition.status == "False"
    assert "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3" in (condition.message or "")
    pod = core.read_namespaced_pod("picky", namespace)
    assert pod.spec is not None and pod.spec.node_name is None
    assert pod_phase(pod) == "Pending"
