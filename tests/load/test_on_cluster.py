"""``tandem load --pool`` reads the InferencePool and its Deployments from a real API server."""

from __future__ import annotations

import asyncio
from typing import Any

import kubernetes
import pytest
import yaml
from paths import REPO

from tandem.api import GROUP, PLURAL, VERSION
from tandem.load.kube import KubernetesPool
from tandem.load.replicas import PoolError, ReplicaSample, replica_samples

pytestmark = pytest.mark.cluster

EXAMPLE = REPO / "examples" / "simulator-pool.yaml"


def deployment(name: str, labels: dict[str, str], replicas: int) -> dict[str, Any]:
    selector = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        },
    }


def test_the_pool_and_its_deployments_are_read(
    devcluster: Any, kube_api: kubernetes.client.ApiClient, inferencepool_crd: Any, namespace: str
) -> None:
    pool = yaml.safe_load(EXAMPLE.read_text())
    kubernetes.client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, pool
    )
    apps = kubernetes.client.AppsV1Api(kube_api)
    # Zero replicas: nothing to run, only the counts to read. The last belongs to another pool.
    apps.create_namespaced_deployment(
        namespace,
        deployment("sim-llama-decode", {"tandem.dev/pool": "sim-llama", "tandem.dev/role": "decode"}, 0),
    )
    apps.create_namespaced_deployment(
        namespace, deployment("sim-llama-router", {"tandem.dev/pool": "sim-llama"}, 0)
    )
    apps.create_namespaced_deployment(
        namespace, deployment("other-decode", {"tandem.dev/pool": "other", "tandem.dev/role": "decode"}, 0)
    )

    async def read() -> tuple[Any, list[ReplicaSample], str]:
        reader = await KubernetesPool.connect("sim-llama", namespace, devcluster.kubeconfig)
        try:
            resource = await reader.resource()
            samples = replica_samples(reader.name, await reader.deployments(), 0.0)
            missing = await KubernetesPool.connect("absent", namespace, devcluster.kubeconfig)
            try:
                with pytest.raises(PoolError) as error:
                    await missing.resource()
            finally:
                await missing.close()
            return resource, samples, str(error.value)
        finally:
            await reader.close()

    resource, samples, missing = asyncio.run(read())
    assert (resource.spec.slo.ttft_ms, resource.spec.slo.itl_ms) == (1000, 40)
    assert resource.spec.workload.prompt_tokens.p90 == 4500
    assert samples == [ReplicaSample(0.0, "decode", 0, 0), ReplicaSample(0.0, "router", 0, 0)]
    assert f"cannot read InferencePool {namespace}/absent: 404" in missing
