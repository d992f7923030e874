"""One router, many pools, on the devcluster: two simulator pools of different models share one
router (spec.router.shared); both answer through its Service, /v1/models lists both; deleting one
leaves the other serving through the router, which goes with the last pool.

The operator runs in-process under its own RBAC; the engines and the router run as processes.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import kubernetes.client
import pytest
from operator_cluster import OperatorThread, PoolApi, example

from tandem.devcluster.testing import ready_endpoints, wait_for

pytestmark = pytest.mark.cluster

ROUTER = "chat"
MODELS = {"sim-llama": "meta-llama/Llama-3.1-8B-Instruct", "sim-qwen": "Qwen/Qwen2.5-7B-Instruct"}


def shared_pool(name: str) -> dict[str, Any]:
    body = example(
        "simulator-pool.yaml",
        model={"name": MODELS[name]},
        router={"shared": ROUTER},
        prefill={"replicas": 1},
        decode={"replicas": 1},
    )
    body["metadata"]["name"] = name
    return body


def router_urls(kube_api: kubernetes.client.ApiClient, namespace: str) -> list[str]:
    return [f"http://{ip}:{port}" for ip, port in sorted(ready_endpoints(kube_api, namespace, ROUTER))]


def complete(url: str, model: str) -> httpx.Response:
    body = {"model": model, "prompt": "Hello there", "max_tokens": 4}
    return httpx.post(f"{url}/v1/completions", json=body, timeout=30, trust_env=False)


def models(url: str) -> set[str]:
    answer = httpx.get(f"{url}/v1/models", timeout=10, trust_env=False)
    return {item["id"] for item in answer.json()["data"]} if answer.status_code == 200 else set()


def router_deployment(pools: PoolApi) -> kubernetes.client.V1Deployment | None:
    listed = pools.apps.list_namespaced_deployment(pools.namespace, field_selector=f"metadata.name={ROUTER}")
    return listed.items[0] if listed.items else None


def test_two_models_through_one_router_and_one_pool_deleted(
    pools: PoolApi, rbac_operator: OperatorThread, kube_api: kubernetes.client.ApiClient
) -> None:
    for name in MODELS:
        pools.create(shared_pool(name))
    for name in MODELS:
        wait_for(lambda name=name: pools.ready(name), timeout=240, message=f"{name} Ready=True")

    deployments = {d.metadata.name for d in pools.apps.list_namespaced_deployment(pools.namespace).items}
    assert ROUTER in deployments and not {f"{name}-router" for name in MODELS} & deployments
    for name in MODELS:
        router = pools.get(name)["status"]["router"]
        assert router["shared"] == ROUTER
        assert router["endpoint"] == f"http://{ROUTER}.{pools.namespace}.svc.cluster.local:8000/v1"

    # Both models through the one router's Service, each to its own pool's engines.
    urls = wait_for(lambda: router_urls(kube_api, pools.namespace), message="router endpoints")
    wait_for(
        lambda: all(models(url) == set(MODELS.values()) for url in urls), message="/v1/models lists both"
    )
    for model in MODELS.values():
        answer = complete(urls[0], model)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == model

    # sim-qwen goes: the router stays, rendered for sim-llama alone, which keeps answering.
    pools.delete("sim-qwen")
    answers: list[int] = []

    def serving_llama_alone() -> bool:
        deployment = router_deployment(pools)
        assert deployment is not None, "the shared router went with one of its pools"
        urls = router_urls(kube_api, pools.namespace)
        if not urls:
            return False
        try:
            answers.append(complete(urls[0], MODELS["sim-llama"]).status_code)
            listed = models(urls[0])
        except httpx.TransportError:  # a router replaced between the listing and the request
            return False
        owners = [ref.name for ref in deployment.metadata.owner_references or []]
        return listed == {MODELS["sim-llama"]} and owners == ["sim-llama"]

    wait_for(serving_llama_alone, timeout=180, interval=1.0, message="the router serving sim-llama alone")
    assert answers and set(answers) == {200}, answers
    gone = complete(router_urls(kube_api, pools.namespace)[0], MODELS["sim-qwen"])
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "model_not_found"

    # The router rolls out for sim-llama alone (its --pool list and Role changed), then serves on.
    def rolled_out_while_serving() -> bool:
        urls = router_urls(kube_api, pools.namespace)
        with contextlib.suppress(httpx.TransportError):  # a router replaced since the listing
            answers.append(complete(urls[0], MODELS["sim-llama"]).status_code if urls else 0)
        return pools.ready("sim-llama")

    wait_for(rolled_out_while_serving, timeout=120, interval=1.0, message="sim-llama Ready after the rollout")
    assert set(answers) == {200}, answers  # sim-llama answered all through
    deployment = router_deployment(pools)
    assert deployment is not None
    args = deployment.spec.template.spec.containers[0].args
    assert [args[i + 1] for i, arg in enumerate(args) if arg == "--pool"] == ["sim-llama"]
    answer = complete(router_urls(kube_api, pools.namespace)[0], MODELS["sim-llama"])
    assert answer.status_code == 200, answer.text

    # The last member goes: so does the router.
    pools.delete("sim-llama")

    # The garbage collector removes the router's Deployment and Service one by one, in either order.
    def router_gone() -> bool:
        services = {s.metadata.name for s in pools.core.list_namespaced_service(pools.namespace).items}
        return router_deployment(pools) is None and ROUTER not in services

    wait_for(router_gone, timeout=120, message="the shared router's Deployment and Service removed")
    assert rbac_operator.metric("tandem_operator_reconcile_errors_total") == 0
