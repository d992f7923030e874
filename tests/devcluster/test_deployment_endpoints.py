"""A Deployment on the devcluster: its pods run as local processes on their own pod IPs, the
EndpointSlice controller publishes the ready ones, and scaling down stops the surplus processes."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from kubernetes import client

from tandem.devcluster.testing import ready_endpoints, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_devcluster")]


def http_server_deployment(name: str, replicas: int) -> client.V1Deployment:
    container = {
        "name": "web",
        "image": "docker.io/library/python:3.11-slim",
        "command": ["python3", "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
    }
    return client.V1Deployment.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [container], "terminationGracePeriodSeconds": 5},
                },
            },
        }
    )


def service(name: str) -> client.V1Service:
    return client.V1Service.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "selector": {"app": name},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        }
    )


def answers_http(address: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def test_deployment_replicas_become_ready_endpoints_and_scale_down(
    kube_api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_service(namespace, service("web"))
    apps.create_namespaced_deployment(namespace, http_server_deployment("web", replicas=3))

    def exactly(count: int) -> set[tuple[str, int]] | None:
        found = ready_endpoints(kube_api, namespace, "web")
        return found if len(found) == count else None

    three = wait_for(lambda: exactly(3), timeout=60, message="3 ready endpoints of Service web")
    assert {port for _, port in three} == {8080}
    assert len({address for address, _ in three}) == 3
    assert all(address.startswith("127.") for address, _ in three)
    assert all(answers_http(address, port) for address, port in three)

    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})
    one = wait_for(
        lambda: exactly(1), timeout=60, message="1 ready endpoint of Service web after scaling to 1"
    )
    assert one < three
    wait_for(
        lambda: len(core.list_namespaced_pod(namespace, label_selector="app=web").items) == 1,
        timeout=30,
        message="the two surplus pods deleted",
    )
    # The surplus pods' processes are gone, not merely unpublished.
    assert not any(answers_http(address, port) for address, port in three - one)
