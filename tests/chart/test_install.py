"""The chart on a real API server, with real Helm: it installs, its RBAC works as the operator's
ServiceAccount, and uninstalling leaves nothing of the release behind."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from tandem.devcluster.demo import chart
from tandem.devcluster.testing import ClusterUnderTest, crd_established, wait_for

pytestmark = pytest.mark.cluster

CRD = "inferencepools.tandem.dev"


def release_objects(api: client.ApiClient, namespace: str, release: str) -> list[str]:
    """Everything the release may have made that still exists, as kind/name."""
    selector = f"app.kubernetes.io/instance={release}"
    core, apps, rbac = client.CoreV1Api(api), client.AppsV1Api(api), client.RbacAuthorizationV1Api(api)
    listed = [
        *(
            ("Deployment", d)
            for d in apps.list_namespaced_deployment(namespace, label_selector=selector).items
        ),
        *(("Service", s) for s in core.list_namespaced_service(namespace, label_selector=selector).items),
        *(
            ("ServiceAccount", a)
            for a in core.list_namespaced_service_account(namespace, label_selector=selector).items
        ),
        *(("ClusterRole", r) for r in rbac.list_cluster_role(label_selector=selector).items),
        *(("ClusterRoleBinding", b) for b in rbac.list_cluster_role_binding(label_selector=selector).items),
        # The operator's pods, and Helm's record of the release.
        *(("Pod", p) for p in core.list_namespaced_pod(namespace, label_selector=selector).items),
        *(
            ("Secret", s)
            for s in core.list_namespaced_secret(namespace, label_selector=f"owner=helm,name={release}").items
        ),
    ]
    return [f"{kind}/{obj.metadata.name}" for kind, obj in listed]


def can(
    api: client.ApiClient, user: str, verb: str, resource: str, group: str = "", namespace: str = ""
) -> bool:
    review = client.AuthorizationV1Api(api).create_subject_access_review(
        {
            "spec": {
                "user": user,
                "resourceAttributes": {
                    "verb": verb,
                    "resource": resource,
                    "group": group,
                    "namespace": namespace,
                },
            }
        }
    )
    allowed: bool = review.status.allowed
    return allowed


def test_chart_installs_with_working_rbac_and_uninstalls_without_a_trace(
    devcluster: ClusterUnderTest, kube_api: client.ApiClient, namespace: str
) -> None:
    release = f"chart-{namespace[-6:]}"
    # The operator watches only this namespace, so it cannot touch other tests' pools.
    values: dict[str, Any] = {"operator": {"watchNamespaces": [namespace]}}
    summary = chart.install(devcluster.kubeconfig, release, namespace, values)
    try:
        assert summary["status"] == "deployed"
        assert "examples/simulator-pool.yaml" in summary["notes"]
        assert crd_established(kube_api, CRD)
        created = release_objects(kube_api, namespace, release)
        operator = f"{release}-tandem-operator"
        for expected in (
            f"Deployment/{operator}",
            f"Service/{operator}-metrics",
            f"ServiceAccount/{operator}",
        ):
            assert expected in created
        account = f"system:serviceaccount:{namespace}:{operator}"
        assert can(kube_api, account, "create", "deployments", "apps", namespace="elsewhere")
        assert can(kube_api, account, "patch", "inferencepools/status", "tandem.dev", namespace=namespace)
        assert can(kube_api, account, "watch", "endpointslices", "discovery.k8s.io", namespace=namespace)
        # Least privilege: no secrets, no pool edits, no RBAC beyond the router's Roles.
        assert not can(kube_api, account, "get", "secrets", namespace=namespace)
        assert not can(kube_api, account, "delete", "inferencepools", "tandem.dev", namespace=namespace)
        assert not can(kube_api, account, "create", "clusterroles", "rbac.authorization.k8s.io")
    finally:
        chart.uninstall(devcluster.kubeconfig, release, namespace)

    wait_for(
        lambda: not release_objects(kube_api, namespace, release),
        timeout=60,
        message=f"objects of release {release} left after uninstall",
    )
    # Helm keeps CRDs on uninstall (pools elsewhere would lose their data otherwise): this raises
    # a 404 if uninstalling removed it.
    client.ApiextensionsV1Api(kube_api).read_custom_resource_definition(CRD)
