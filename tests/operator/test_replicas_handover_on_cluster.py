"""Server-side apply field ownership of ``spec.replicas`` on a real API server, as External mode
relies on it (operator/autoscale/handover.py): the operator's own KubeClient applies, an HPA's
write of the scale subresource is an update, and each step is read back.

The Deployments' pods are not meant to run (their image is not runnable here): only the objects
matter.
"""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import kubernetes.client
import pytest

from tandem.devcluster.testing import ClusterUnderTest
from tandem.operator.autoscale.handover import handover_manifest
from tandem.operator.kube import KubeClient
from tandem.operator.naming import (
    FIELD_MANAGER,
    HANDOVER_FIELD_MANAGER,
    REPLICAS_BY_OPERATOR,
    REPLICAS_OWNER_ANNOTATION,
)

pytestmark = pytest.mark.cluster


def deployment(namespace: str, replicas: int | None, *, revision: str = "1") -> dict[str, Any]:
    """An engine-like Deployment as the operator applies it: with replicas and the owner
    annotation (operator-owned), or without both (left to an HPA)."""
    labels = {"app": "engine"}
    meta: dict[str, Any] = {"name": "engine", "namespace": namespace}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": labels},
        "template": {
            "metadata": {"labels": labels, "annotations": {"revision": revision}},
            "spec": {"containers": [{"name": "engine", "image": "registry.invalid/engine:1"}]},
        },
    }
    if replicas is not None:
        meta["annotations"] = {REPLICAS_OWNER_ANNOTATION: REPLICAS_BY_OPERATOR}
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}


@pytest.fixture
async def client(devcluster: ClusterUnderTest) -> AsyncIterator[KubeClient]:
    connected = await KubeClient.connect(devcluster.kubeconfig)
    yield connected
    await connected.close()


def replicas_managers(live: dict[str, Any]) -> set[str]:
    """The field managers that own spec.replicas."""
    return {
        entry["manager"]
        for entry in live["metadata"].get("managedFields") or []
        if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})
    }


def hpa_scales(kube_api: kubernetes.client.ApiClient, namespace: str, replicas: int) -> None:
    """What the HPA controller does: an update of the scale subresource, read again and retried when
    the Deployment changed in between (the deployment controller writes it too)."""
    apps = kubernetes.client.AppsV1Api(kube_api)
    for attempt in range(5):
        scale = apps.read_namespaced_deployment_scale("engine", namespace)
        scale.spec.replicas = replicas
        try:
            apps.replace_namespaced_deployment_scale(
                "engine", namespace, scale, field_manager="horizontal-pod-autoscaler"
            )
            return
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status != 409 or attempt == 4:
                raise


async def test_leaving_replicas_out_alone_resets_them_which_is_why_they_are_handed_over(
    client: KubeClient, namespace: str
) -> None:
    await client.apply(deployment(namespace, 3))
    live = await client.apply(deployment(namespace, None))
    assert live["spec"]["replicas"] == 1  # the operator held them alone: removed, then defaulted


async def test_handed_over_replicas_stay_until_the_hpa_takes_them_and_come_back_on_request(
    client: KubeClient, namespace: str, kube_api: kubernetes.client.ApiClient
) -> None:
    live = await client.apply(deployment(namespace, 3))
    assert replicas_managers(live) == {FIELD_MANAGER}

    live = await client.apply(handover_manifest(copy.deepcopy(live), 3), field_manager=HANDOVER_FIELD_MANAGER)
    assert replicas_managers(live) == {FIELD_MANAGER, HANDOVER_FIELD_MANAGER}  # the same value: shared
    assert live["metadata"]["annotations"][REPLICAS_OWNER_ANNOTATION] == "external"  # forced over

    live = await client.apply(deployment(namespace, None))
    assert live["spec"]["replicas"] == 3
    assert replicas_managers(live) == {HANDOVER_FIELD_MANAGER}
    assert live["metadata"]["annotations"][REPLICAS_OWNER_ANNOTATION] == "external"

    hpa_scales(kube_api, namespace, 5)
    live = await client.apply(deployment(namespace, None, revision="2"))  # a later change of the spec
    assert live["spec"]["replicas"] == 5
    assert FIELD_MANAGER not in replicas_managers(live)

    live = await client.apply(deployment(namespace, 2))  # mode Planner again: forced back
    assert live["spec"]["replicas"] == 2
    assert live["metadata"]["annotations"][REPLICAS_OWNER_ANNOTATION] == REPLICAS_BY_OPERATOR
    assert FIELD_MANAGER in replicas_managers(live)


async def test_a_workload_created_without_replicas_gets_the_planned_count_from_the_handover(
    client: KubeClient, namespace: str, kube_api: kubernetes.client.ApiClient
) -> None:
    live = await client.apply(deployment(namespace, None))
    assert live["spec"]["replicas"] == 1 and replicas_managers(live) == set()
    live = await client.apply(handover_manifest(live, 4), field_manager=HANDOVER_FIELD_MANAGER)
    live = await client.apply(deployment(namespace, None, revision="2"))
    assert live["spec"]["replicas"] == 4
    hpa_scales(kube_api, namespace, 6)
    live = await client.apply(deployment(namespace, None, revision="3"))
    assert live["spec"]["replicas"] == 6
