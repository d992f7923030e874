"""The router discovering a pool on the devcluster (Kubernetes 1.20: EndpointSlices are v1beta1).

Simulator pods behind the pool's `<pool>-prefill` and `<pool>-decode` Services, an InferencePool
read for the pool's settings, and the router in-process with the cluster's kubeconfig: requests
route by length, scaling decode out spreads them, a deleted pod leaves rotation, and a changed
InferencePool changes the routing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from kubernetes import client
from prometheus_text import metric_sum
from router_support import MODEL, eventually, free_port, router_running

from tandem.api.resource import GROUP, PLURAL, VERSION
from tandem.router.settings import KubernetesSettings, RouterSettings

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

POOL = "sims"
IMAGE = "ghcr.io/tandem-dev/tandem:dev"
NIXL = json.dumps({"kv_connector": "NixlConnector", "kv_role": "kv_both"})
LONG_PROMPT = "Summarise this:" + " the quick brown fox jumps over the lazy dog" * 40  # ~400 tokens
_T = TypeVar("_T")


def deployment(role: str, replicas: int) -> dict[str, Any]:
    labels = {"tandem.dev/pool": POOL, "tandem.dev/role": role}
    container = {
        "name": "engine",
        "image": IMAGE,
        "args": ["sim", MODEL, "--port", "8000", "--speed", "50", "--kv-transfer-config", NIXL],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "value": "$(POD_IP)"},
        ],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 1},
    }
    return {
        "metadata": {"name": f"{POOL}-{role}"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 2},
            },
        },
    }


def headless_service(role: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{POOL}-{role}"},
        "spec": {
            "clusterIP": "None",
            "selector": {"tandem.dev/pool": POOL, "tandem.dev/role": role},
            "ports": [{"name": "http", "port": 8000, "targetPort": "http"}],
        },
    }


def inference_pool(threshold: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferencePool",
        "metadata": {"name": POOL},
        "spec": {
            "model": {"name": MODEL},
            "engine": {"type": "simulator"},
            "accelerator": {"type": "H100-80GB"},
            "disaggregation": {"promptTokensThreshold": threshold, "kvTransfer": {"connector": "nixl"}},
        },
    }


async def test_router_follows_the_pool_on_the_cluster(
    devcluster: Any, kube_api: client.ApiClient, namespace: str, inferencepool_crd: Any
) -> None:
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    objects = client.CustomObjectsApi(kube_api)
    for role in ("prefill", "decode"):
        core.create_namespaced_service(namespace, headless_service(role))
        apps.create_namespaced_deployment(namespace, deployment(role, 1))
    objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, inference_pool(200))

    settings = RouterSettings(
        host="127.0.0.1",
        port=free_port(),
        notify_port=free_port(),
        scrape_interval_s=0.5,
        debug=True,  # the endpoint headers and metric labels this test watches
        kubernetes=KubernetesSettings(namespace=namespace, pools=(POOL,), kubeconfig=devcluster.kubeconfig),
    )
    async with router_running(settings) as url, httpx.AsyncClient(base_url=url, timeout=30) as http:

        async def decoders() -> set[str]:
            metrics = (await http.get("/metrics")).text
            return {
                line.split('endpoint="')[1].split('"')[0]
                for line in metrics.splitlines()
                if line.startswith("tandem_router_endpoint_healthy{")
                and 'role="decode"' in line
                and line.endswith(" 1.0")
            }

        async def ready() -> bool:
            return (await http.get("/ready")).status_code == 200

        async def complete(prompt: str) -> httpx.Response:
            answer = await http.post(
                "/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 4}
            )
            assert answer.status_code == 200, answer.text
            return answer

        await eventually(ready, "the router ready (pool read, a decode endpoint discovered)")
        assert (await complete("Say hello.")).headers["x-tandem-route"] == "direct"
        await eventually(lambda: _has_prefill(http), "the prefill endpoint discovered")
        assert (await complete(LONG_PROMPT)).headers["x-tandem-route"] == "pd"

        first = await decoders()
        apps.patch_namespaced_deployment_scale(f"{POOL}-decode", namespace, {"spec": {"replicas": 3}})
        three = await eventually(lambda: _when(decoders(), lambda d: len(d) == 3), "3 decode endpoints")
        assert first < three
        answers = await asyncio.gather(*(complete(f"{i} hello") for i in range(12)))
        assert {a.headers["x-tandem-decode"] for a in answers} == three

        victim_url = sorted(three)[0]
        victim_ip = victim_url.split("//")[1].split(":")[0]
        pods = core.list_namespaced_pod(namespace, label_selector="tandem.dev/role=decode").items
        victim = next(p for p in pods if p.status.pod_ip == victim_ip)
        core.delete_namespaced_pod(victim.metadata.name, namespace)
        await eventually(lambda: _when(decoders(), lambda d: victim_url not in d), "the deleted pod out")
        answers = await asyncio.gather(*(complete(f"{i} again") for i in range(9)))
        assert victim_url not in {a.headers["x-tandem-decode"] for a in answers}

        objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            POOL,
            {"spec": {"disaggregation": {"promptTokensThreshold": 100000}}},
        )

        async def long_goes_direct() -> bool:
            return (await complete(LONG_PROMPT)).headers["x-tandem-route"] == "direct"

        await eventually(long_goes_direct, "the new threshold in force")
        metrics = (await http.get("/metrics")).text
    assert metric_sum(metrics, "tandem_router_requests_total", route="pd", outcome="ok") >= 1


async def _has_prefill(http: httpx.AsyncClient) -> bool:
    metrics = (await http.get("/metrics")).text
    return metric_sum(metrics, "tandem_router_endpoint_healthy", role="prefill") >= 1


async def _when(value: Awaitable[_T], condition: Callable[[_T], bool]) -> _T | None:
    result = await value
    return result if condition(result) else None
