"""A pod talks to the API with in-cluster config as its ServiceAccount, and RBAC decides."""

from __future__ import annotations

import sys
import textwrap

import pytest
from kubernetes import client

from tandem.devcluster.testing import ClusterUnderTest, finished_phase, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_devcluster")]

PROBE_API = textwrap.dedent(
    """
    from kubernetes import client, config
    from kubernetes.client import ApiException
    config.load_incluster_config()
    core = client.CoreV1Api()
    namespace = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
    pods = core.list_namespaced_pod(namespace)
    print("pods allowed:", sorted(p.metadata.name for p in pods.items), flush=True)
    try:
        core.list_namespaced_secret(namespace)
        print("secrets allowed", flush=True)
    except ApiException as exc:
        print("secrets denied:", exc.status, flush=True)
    """
)


def test_in_cluster_client_is_held_to_its_service_account_rbac(
    kube_api: client.ApiClient, devcluster: ClusterUnderTest, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    role = {
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
    }
    rbac.create_namespaced_role(namespace, client.V1Role.model_validate(role))
    binding = {
        "metadata": {"name": "reader-reads-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
    }
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding.model_validate(binding))
    wait_for(
        lambda: core.read_namespaced_service_account("reader", namespace).secrets,
        message="the reader ServiceAccount's token Secret",
    )
    manifest = {
        "metadata": {"name": "api-probe"},
        "spec": {
            "serviceAccountName": "reader",
            "restartPolicy": "Never",
            "containers": [
                {"name": "probe", "image": "python:3.11", "command": [sys.executable, "-c", PROBE_API]}
            ],
        },
    }
    core.create_namespaced_pod(namespace, client.V1Pod.model_validate(manifest))

    phase = wait_for(
        lambda: finished_phase(core.read_namespaced_pod("api-probe", namespace)),
        timeout=60,
        message="the api-probe pod to finish",
    )
    logs = devcluster.pod_logs(namespace, "api-probe")
    assert phase == "Succeeded", logs
    assert "pods allowed: ['api-probe']" in logs
    assert "secrets denied: 403" in logs
