"""Services from inside a pod: its /etc/hosts names them (rewritten as Services come and go), the
userspace proxy on the ClusterIP spreads connections over the ready endpoints, and a headless
Service's name resolves to the pods themselves."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import pytest
from kubernetes import client

from tandem.devcluster.testing import ClusterUnderTest, finished_phase, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("local_devcluster")]

# Waits until the headless name resolves to both backends, then fetches each URL until two
# different pods have answered (each Service's EndpointSlice fills in on its own schedule).
FETCH = textwrap.dedent(
    """
    import socket, sys, time, urllib.request
    deadline = time.monotonic() + 40
    def resolve(name):
        try:
            return {info[4][0] for info in socket.getaddrinfo(name, 8080, proto=socket.IPPROTO_TCP)}
        except OSError:
            return set()
    def fetch(url):
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return response.read().decode()
            except OSError as exc:
                if time.monotonic() > deadline:
                    print(url, "failed:", exc, flush=True)
                    sys.exit(1)
                time.sleep(0.3)
    *urls, headless = sys.argv[1:]
    while len(resolve(headless)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    print(headless, "resolves to", " ".join(sorted(resolve(headless))), flush=True)
    for url in urls:
        answers = set()
        while len(answers) < 2 and time.monotonic() < deadline:
            answers.add(fetch(url))
        print(url, "answered by", " ".join(sorted(answers)), flush=True)
    """
)

# Answers every GET with its own hostname (the pod's name), bound to the pod IP it is given.
HOSTNAME_SERVER = textwrap.dedent(
    """
    import http.server, os, socket
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = socket.gethostname().encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    http.server.HTTPServer((os.environ["TANDEM_BIND_HOST"], 8080), Handler).serve_forever()
    """
)


def backend_deployment() -> client.V1Deployment:
    container = {
        "name": "server",
        "image": "python:3.11",
        "command": [sys.executable, "-c", HOSTNAME_SERVER],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }
    return client.V1Deployment.model_validate(
        {
            "metadata": {"name": "backend"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "backend"}},
                "template": {"metadata": {"labels": {"app": "backend"}}, "spec": {"containers": [container]}},
            },
        }
    )


def service(name: str, port: int, headless: bool = False) -> client.V1Service:
    spec: dict[str, Any] = {"selector": {"app": "backend"}, "ports": [{"port": port, "targetPort": 8080}]}
    if headless:
        spec["clusterIP"] = "None"
    return client.V1Service.model_validate({"metadata": {"name": name}, "spec": spec})


def test_running_pod_reaches_services_by_name(
    kube_api: client.ApiClient, devcluster: ClusterUnderTest, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    urls = [f"http://backend.{namespace}.svc.cluster.local/", "http://backend/"]
    fetcher = {
        "metadata": {"name": "fetcher"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "fetch",
                    "image": "python:3.11",
                    "command": [sys.executable, "-c", FETCH, *urls, "direct"],
                }
            ],
        },
    }
    # The client starts first: the names must appear in its /etc/hosts while it runs.
    core.create_namespaced_pod(namespace, client.V1Pod.model_validate(fetcher))
    client.AppsV1Api(kube_api).create_namespaced_deployment(namespace, backend_deployment())
    core.create_namespaced_service(namespace, service("backend", 80))
    core.create_namespaced_service(namespace, service("direct", 8080, headless=True))

    phase = wait_for(
        lambda: finished_phase(core.read_namespaced_pod("fetcher", namespace)),
        timeout=60,
        message="the fetcher pod to finish",
    )
    logs = devcluster.pod_logs(namespace, "fetcher")
    assert phase == "Succeeded", logs
    backends = core.list_namespaced_pod(namespace, label_selector="app=backend").items
    names = sorted(pod.metadata.name or "" for pod in backends if pod.metadata)
    for url in urls:
        [line] = [line for line in logs.splitlines() if line.startswith(url)]
        assert line.split("answered by ")[1].split() == names  # the proxy spreads connections
    pod_ips = " ".join(sorted(pod.status.pod_ip or "" for pod in backends if pod.status))
    assert f"direct resolves to {pod_ips}" in logs
