"""The demo's path as tests: install the chart, bring the simulator pool to Ready, send traffic to the
router Service by its DNS name from a pod, scale a role, delete the pool, uninstall.

One release and one pool serve the whole module (starting them is the slow part); the tests run in
file order and the last two tear down what the earlier ones use. They run on the devcluster
(``KUBEBUILDER_ASSETS``) or on any cluster named by ``TANDEM_TEST_KUBECONFIG`` (``make e2e-kind``),
whose nodes must have the image in ``TANDEM_E2E_IMAGE`` (default: the chart's).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client

from tandem.api import GROUP, PLURAL, VERSION, ConditionType, InferencePool, InferencePoolStatus
from tandem.devcluster.demo import chart, pool, traffic
from tandem.devcluster.testing import ClusterUnderTest, namespace_name, ready_endpoints, wait_for
from tandem.operator.settings import DEFAULT_TANDEM_IMAGE

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

IMAGE = os.environ.get("TANDEM_E2E_IMAGE", DEFAULT_TANDEM_IMAGE)
READY_TIMEOUT_S = 150.0
GONE_TIMEOUT_S = 60.0

# Runs in a pod with the tandem image: the standard library only, so it runs anywhere Python does.
CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys, urllib.request
    url, model = sys.argv[1], sys.argv[2]
    for label, prompt in (("short", sys.argv[3]), ("long", sys.argv[4])):
        body = json.dumps({"model": model, "prompt": prompt, "max_tokens": 8}).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
            route = response.headers.get("x-tandem-route")
            print(json.dumps({"label": label, "status": response.status, "route": route,
                              "text": answer["choices"][0]["text"]}), flush=True)
    """
)


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    cluster: ClusterUnderTest


@dataclass(frozen=True)
class ReadyPool:
    name: str
    namespace: str
    spec: InferencePool
    status: InferencePoolStatus


def chart_values(namespace: str) -> dict[str, Any]:
    repository, _, tag = IMAGE.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        # Only this namespace: other tests' pools on the same cluster are not this operator's.
        "operator": {"watchNamespaces": [namespace]},
    }


@pytest.fixture(scope="module")
def release(devcluster: ClusterUnderTest, kube_api: client.ApiClient) -> Iterator[Release]:
    core = client.CoreV1Api(kube_api)
    namespace = namespace_name("e2e-simulator-pool")
    core.create_namespace({"metadata": {"name": namespace, "labels": {"tandem.dev/test": "true"}}})
    name = "e2e"
    try:
        chart.install(devcluster.kubeconfig, name, namespace, chart_values(namespace))
        yield Release(name, namespace, devcluster)
    finally:
        chart.uninstall(devcluster.kubeconfig, name, namespace)
        core.delete_namespace(namespace)


@pytest.fixture(scope="module")
def ready_pool(release: Release, kube_api: client.ApiClient) -> ReadyPool:
    manifest = pool.load_manifest()
    name = manifest["metadata"]["name"]
    pool.apply(kube_api, release.namespace, manifest)
    status = pool.wait_ready(kube_api, release.namespace, name, READY_TIMEOUT_S)
    return ReadyPool(name, release.namespace, InferencePool.model_validate(manifest), status)


def operator_available(api: client.ApiClient, release: Release) -> bool:
    deployment = client.AppsV1Api(api).read_namespaced_deployment(
        f"{release.name}-tandem-operator", release.namespace
    )
    return (deployment.status.available_replicas or 0) >= 1


def pool_children(api: client.ApiClient, namespace: str, name: str) -> list[str]:
    selector = f"tandem.dev/pool={name}"
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    found = [
        *(
            f"Deployment/{d.metadata.name}"
            for d in apps.list_namespaced_deployment(namespace, label_selector=selector).items
        ),
        *(
            f"Service/{s.metadata.name}"
            for s in core.list_namespaced_service(namespace, label_selector=selector).items
        ),
        *(
            f"ConfigMap/{c.metadata.name}"
            for c in core.list_namespaced_config_map(namespace, label_selector=selector).items
        ),
        *(
            f"Pod/{p.metadata.name}"
            for p in core.list_namespaced_pod(namespace, label_selector=selector).items
        ),
    ]
    return found


def run_client_pod(
    api: client.ApiClient, target: ReadyPool, cluster: ClusterUnderTest
) -> list[dict[str, Any]]:
    """Run CLIENT_SCRIPT in a pod against the router Service's DNS name; its output lines."""
    spec = target.spec.spec
    url = f"http://{target.name}-router.{target.namespace}.svc.cluster.local:{spec.router.service.port}/v1/completions"
    threshold = target.status.plan.prompt_tokens_threshold if target.status.plan else None
    assert threshold, f"the plan has no handoff threshold: {target.status.plan}"
    long_prompt = traffic.long_prompt(threshold, spec.model.max_model_len, max_tokens=8)
    core = client.CoreV1Api(api)
    name = "e2e-client"
    core.create_namespaced_pod(
        target.namespace,
        {
            "metadata": {"name": name},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                # The image's own user (65532); the devcluster runs it as this test's user.
                "securityContext": {"runAsNonRoot": True},
                "containers": [
                    {
                        "name": "client",
                        "image": IMAGE,
                        "command": ["python", "-c", CLIENT_SCRIPT],
                        "args": [url, spec.model.name, traffic.SHORT_PROMPT, long_prompt],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        },
    )

    def finished() -> str | None:
        phase: str | None = core.read_namespaced_pod(name, target.namespace).status.phase
        return phase if phase in ("Succeeded", "Failed") else None

    try:
        phase = wait_for(finished, timeout=90, message="the client pod did not finish")
        logs = cluster.pod_logs(target.namespace, name)
    finally:
        core.delete_namespaced_pod(name, target.namespace)
    assert phase == "Succeeded", f"client pod {phase}:\n{logs}"
    return [json.loads(line) for line in logs.splitlines() if line.startswith("{")]


def wait_until_gone(remaining: Callable[[], list[str]], what: str) -> None:
    """Poll until ``remaining()`` is empty; fail naming what is still there."""
    left: list[str] = []

    def gone() -> bool:
        left[:] = remaining()
        return not left

    try:
        wait_for(gone, timeout=GONE_TIMEOUT_S, message=what)
    except pytest.fail.Exception:
        pytest.fail(f"{what}: {left}")


def test_operator_runs_from_the_chart(release: Release, kube_api: client.ApiClient) -> None:
    wait_for(
        lambda: operator_available(kube_api, release),
        timeout=60,
        message="the operator Deployment is not available",
    )


def test_pool_becomes_ready_with_a_disaggregated_plan(ready_pool: ReadyPool) -> None:
    status = ready_pool.status
    assert status.plan is not None and status.plan.feasible
    assert status.plan.prompt_tokens_threshold is not None
    for role in (status.prefill, status.decode, status.router):
        assert role is not None and role.ready_replicas >= 1 and role.ready_replicas == role.replicas
    assert status.router is not None
    assert status.router.endpoint == (
        f"http://{ready_pool.name}-router.{ready_pool.namespace}.svc.cluster.local:8000/v1"
    )


def test_router_service_serves_both_routes_to_a_pod_by_dns_name(
    release: Release, ready_pool: ReadyPool, kube_api: client.ApiClient
) -> None:
    replies = {reply["label"]: reply for reply in run_client_pod(kube_api, ready_pool, release.cluster)}
    assert replies["short"]["status"] == 200 and replies["short"]["route"] == "direct"
    assert replies["long"]["status"] == 200 and replies["long"]["route"] == "pd"
    assert all(reply["text"] for reply in replies.values())


def test_scaling_decode_brings_a_second_ready_endpoint(
    ready_pool: ReadyPool, kube_api: client.ApiClient
) -> None:
    objects = client.CustomObjectsApi(kube_api)
    objects.patch_namespaced_custom_object(
        GROUP, VERSION, ready_pool.namespace, PLURAL, ready_pool.name, {"spec": {"decode": {"replicas": 2}}}
    )

    def scaled() -> bool:
        status = pool.read_status(kube_api, ready_pool.namespace, ready_pool.name)
        return (
            status is not None
            and status.decode is not None
            and status.decode.ready_replicas == 2
            and pool.condition(status, ConditionType.READY) == "True"
        )

    wait_for(scaled, timeout=READY_TIMEOUT_S, message="decode did not reach 2 ready replicas")
    endpoints = ready_endpoints(kube_api, ready_pool.namespace, f"{ready_pool.name}-decode")
    assert len({address for address, _ in endpoints}) == 2


def test_deleting_the_pool_removes_its_children(ready_pool: ReadyPool, kube_api: client.ApiClient) -> None:
    assert pool_children(kube_api, ready_pool.namespace, ready_pool.name)
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        GROUP, VERSION, ready_pool.namespace, PLURAL, ready_pool.name
    )
    wait_until_gone(
        lambda: pool_children(kube_api, ready_pool.namespace, ready_pool.name),
        f"children of pool {ready_pool.name} left after deleting it",
    )


def test_uninstall_leaves_nothing_behind(release: Release, kube_api: client.ApiClient) -> None:
    chart.uninstall(release.cluster.kubeconfig, release.name, release.namespace)
    core = client.CoreV1Api(kube_api)

    def leftovers() -> list[str]:
        """Every pod, Service and Deployment in the namespace, and whatever carries the release."""
        namespace, selector = release.namespace, f"app.kubernetes.io/instance={release.name}"
        apps, rbac = client.AppsV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
        found = [
            *(f"Pod/{o.metadata.name}" for o in core.list_namespaced_pod(namespace).items),
            *(f"Service/{o.metadata.name}" for o in core.list_namespaced_service(namespace).items),
            *(f"Deployment/{o.metadata.name}" for o in apps.list_namespaced_deployment(namespace).items),
            *(
                f"ServiceAccount/{o.metadata.name}"
                for o in core.list_namespaced_service_account(namespace, label_selector=selector).items
            ),
            *(
                f"ClusterRole/{o.metadata.name}"
                for o in rbac.list_cluster_role(label_selector=selector).items
            ),
            *(
                f"ClusterRoleBinding/{o.metadata.name}"
                for o in rbac.list_cluster_role_binding(label_selector=selector).items
            ),
            # Helm's record of the release.
            *(
                f"Secret/{o.metadata.name}"
                for o in core.list_namespaced_secret(
                    namespace, label_selector=f"owner=helm,name={release.name}"
                ).items
            ),
        ]
        return found

    wait_until_gone(leftovers, "objects left after helm uninstall")
