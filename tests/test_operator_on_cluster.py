"""The operator against the devcluster: real apiserver and controller-manager, pods run as processes.

The operator runs in-process (its own thread and event loop) and watches the test's namespace.
Simulator pools run for real (`tandem sim` engines and `tandem router`); vLLM pools cannot run
here, which suits tests about objects only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kubernetes.client
import pytest
from operator_cluster import CHILD_KINDS, OperatorThread, PoolApi, example

from tandem.devcluster.testing import ClusterUnderTest, ready_endpoints, wait_for

pytestmark = pytest.mark.cluster


SIM = "sim-llama"  # examples/simulator-pool.yaml: both roles (disaggregation mode Always)


@pytest.fixture
def pools(kube_api: kubernetes.client.ApiClient, inferencepool_crd: Any, namespace: str) -> PoolApi:
    return PoolApi(kube_api, namespace)


@pytest.fixture
def operator(
    devcluster: ClusterUnderTest, namespace: str, inferencepool_crd: Any
) -> Iterator[OperatorThread]:
    running = OperatorThread(devcluster.kubeconfig, namespace).start()
    yield running
    running.stop()


def ready(pools: PoolApi, name: str) -> bool:
    condition = pools.condition(name, "Ready")
    return condition is not None and condition["status"] == "True"


def owner_uids(child: dict[str, Any]) -> set[str]:
    return {ref["uid"] for ref in child["metadata"].get("ownerReferences") or [] if ref.get("controller")}


def test_simulator_pool_becomes_ready_with_owned_children(
    pools: PoolApi, operator: OperatorThread, kube_api: kubernetes.client.ApiClient
) -> None:
    uid = pools.create(example("simulator-pool.yaml"))["metadata"]["uid"]
    wait_for(lambda: ready(pools, SIM), timeout=180, message="pool Ready=True")

    children = pools.children(SIM)
    expected = {
        *(("Deployment", f"{SIM}-{c}") for c in ("prefill", "decode", "router")),
        *(("Service", f"{SIM}-{c}") for c in ("prefill", "decode", "router")),
        *(("ConfigMap", f"{SIM}-{r}-lmcache") for r in ("prefill", "decode")),
        ("ServiceAccount", f"{SIM}-router"),
        ("Role", f"{SIM}-router"),
        ("RoleBinding", f"{SIM}-router"),
        ("PodDisruptionBudget", f"{SIM}-router"),
        ("PodDisruptionBudget", f"{SIM}-decode"),
    }
    assert set(children) == expected
    assert all(owner_uids(child) == {uid} for child in children.values())

    pool = pools.get(SIM)
    status = pool["status"]
    # Only the operator's status: kopf keeps no handler results, progress, annotations or finalizers.
    assert set(status) == {"observedGeneration", "conditions", "plan", "prefill", "decode", "router"}
    assert not [a for a in pool["metadata"].get("annotations") or {} if "kopf" in a]
    assert not pool["metadata"].get("finalizers")
    for component in ("prefill", "decode", "router"):
        assert status[component]["readyReplicas"] == status[component]["replicas"] >= 1
        assert (
            status[component]["ready"] == f"{status[component]['replicas']}/{status[component]['replicas']}"
        )
    assert status["plan"]["feasible"] is True
    assert status["observedGeneration"] == pool["metadata"]["generation"]

    pods = pools.core.list_namespaced_pod(pools.namespace, label_selector=f"tandem.dev/pool={SIM}").items
    for role, ports in (("prefill", {8000}), ("decode", {8000, 7300, 7400})):
        role_ips = {p.status.pod_ip for p in pods if p.metadata.labels.get("tandem.dev/role") == role}
        assert len(role_ips) == status[role]["replicas"]
        listed = wait_for(
            lambda role=role: ready_endpoints(kube_api, pools.namespace, f"{SIM}-{role}"),
            message=f"{role} EndpointSlices",
        )
        assert listed == {(ip, port) for ip in role_ips for port in ports}
    reasons = {event.reason for event in pools.events(SIM)}
    assert {"Planned", "Created", "Ready"} <= reasons
    assert operator.metric("tandem_operator_reconcile_errors_total") == 0


def test_spec_changes_drift_and_deletion(pools: PoolApi, operator: OperatorThread) -> None:
    name = "llama-8b"  # engine vllm: its pods cannot run here; the objects are what matters
    uid = pools.create(example("llama-3.1-8b-h100.yaml"))["metadata"]["uid"]

    def decode_deployment() -> dict[str, Any] | None:
        return pools.children(name).get(("Deployment", f"{name}-decode"))

    def engine(deployment: dict[str, Any]) -> dict[str, Any]:
        container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
        return container

    def tp(deployment: dict[str, Any]) -> str:
        args = engine(deployment)["args"]
        return str(args[args.index("--tensor-parallel-size") + 1])

    wait_for(lambda: pools.condition(name, "Planned"), message="a plan in the status")
    before = wait_for(decode_deployment, message="decode Deployment")
    plan_before = pools.get(name)["status"]["plan"]

    pools.patch_spec(name, {"workload": {"requestsPerSecond": 40}})  # the example asks for 20
    changed = wait_for(
        lambda: (d := decode_deployment()) is not None and tp(d) != tp(before) and d,
        message="decode Deployment re-rendered for the new rate",
    )
    plan_after = pools.get(name)["status"]["plan"]
    assert plan_after != plan_before
    assert int(tp(changed)) == plan_after["decode"]["tensorParallel"]
    limits = engine(changed)["resources"]["limits"]["nvidia.com/gpu"]
    assert int(limits) == plan_after["decode"]["tensorParallel"] * plan_after["decode"]["pipelineParallel"]
    assert changed["spec"]["replicas"] == plan_after["decode"]["replicas"]

    service = pools.children(name)[("Service", f"{name}-decode")]
    # 1.20 answers a Service delete with a Status the current client cannot read: skip parsing.
    pools.core.delete_namespaced_service(f"{name}-decode", pools.namespace, _preload_content=False)
    restored = wait_for(
        lambda: (
            (s := pools.children(name).get(("Service", f"{name}-decode")))
            and s["metadata"]["uid"] != service["metadata"]["uid"]
            and s
        ),
        message="deleted Service restored",
    )
    assert owner_uids(restored) == {uid}
    pools.apps.patch_namespaced_deployment(f"{name}-decode", pools.namespace, {"spec": {"replicas": 7}})
    wait_for(
        lambda: (
            (d := decode_deployment()) is not None
            and d["spec"]["replicas"] == plan_after["decode"]["replicas"]
        ),
        message="hand-scaled Deployment restored",
    )
    assert "Restored" in {event.reason for event in pools.events(name)}

    pools.delete(name)
    wait_for(lambda: not pools.children(name), timeout=60, message="children garbage-collected")


def test_infeasible_pool_reports_why_and_stays_quiet(pools: PoolApi, operator: OperatorThread) -> None:
    name = "llama-70b-on-l4"
    body = example("simulator-pool.yaml", model={"name": "meta-llama/Llama-3.1-70B-Instruct"})
    body["metadata"]["name"] = name
    body["spec"]["accelerator"] = {"type": "L4", "gpusPerNode": 1}
    pools.create(body)
    condition = wait_for(
        lambda: (c := pools.condition(name, "Ready")) and c["reason"] == "Infeasible" and c,
        message="Ready=False, reason Infeasible",
    )
    assert condition["status"] == "False" and "L4" in condition["message"]
    version = pools.get(name)["metadata"]["resourceVersion"]
    writes = operator.metric("tandem_operator_api_writes_total")
    reconciles = operator.metric("tandem_operator_reconciles_total")
    pools.patch_spec(
        name, {"router": {"maxQueue": 10}}
    )  # a new generation: reconciled again, still infeasible
    wait_for(
        lambda: pools.get(name)["status"]["observedGeneration"] == pools.get(name)["metadata"]["generation"],
        message="new generation observed",
    )
    assert pools.children(name) == {}
    assert operator.healthy()
    assert operator.metric("tandem_operator_reconcile_errors_total") == 0
    assert operator.metric("tandem_operator_reconciles_total") - reconciles <= 3  # no loop
    assert operator.metric("tandem_operator_api_writes_total") - writes == 1  # just the status
    assert pools.get(name)["metadata"]["resourceVersion"] != version
    warnings = [e for e in pools.events(name) if e.reason == "Infeasible"]
    assert len(warnings) == 1 and warnings[0].type == "Warning"


def test_restart_midway_converges_without_duplicates(
    devcluster: ClusterUnderTest, pools: PoolApi, namespace: str, inferencepool_crd: Any
) -> None:
    first = OperatorThread(devcluster.kubeconfig, namespace).start()
    try:
        pools.create(example("simulator-pool.yaml"))
        wait_for(lambda: pools.children(SIM), message="the first children")
    finally:
        first.stop()
    second = OperatorThread(devcluster.kubeconfig, namespace).start()
    try:
        wait_for(lambda: ready(pools, SIM), timeout=180, message="pool Ready=True after the restart")
    finally:
        second.stop()
    kinds = [kind for kind, _ in pools.children(SIM)]
    assert {kind: kinds.count(kind) for kind in CHILD_KINDS} == {
        "Deployment": 3,
        "Service": 3,
        "ConfigMap": 2,
        "ServiceAccount": 1,
        "Role": 1,
        "RoleBinding": 1,
        "PodDisruptionBudget": 2,
    }
    # The restarted operator rendered the same pod templates: one ReplicaSet per Deployment.
    replica_sets = pools.apps.list_namespaced_replica_set(
        namespace, label_selector=f"tandem.dev/pool={SIM}"
    ).items
    owners = [rs.metadata.owner_references[0].name for rs in replica_sets]
    assert sorted(owners) == sorted({*owners}) and len(owners) == 3


# LeaderWorkerSet's API without its controller: enough for the operator to render and apply.
LWS_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "leaderworkersets.leaderworkerset.x-k8s.io"},
    "spec": {
        "group": "leaderworkerset.x-k8s.io",
        "scope": "Namespaced",
        "names": {
            "kind": "LeaderWorkerSet",
            "plural": "leaderworkersets",
            "singular": "leaderworkerset",
            "listKind": "LeaderWorkerSetList",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def test_multi_node_pool_waits_for_a_leader_worker_set_crd(
    pools: PoolApi, operator: OperatorThread, kube_api: kubernetes.client.ApiClient
) -> None:
    name = "llama-70b"
    stages = {"tensorParallel": 4, "pipelineParallel": 4}  # 16 GPUs: two nodes of 8 per instance
    pools.create(example("llama-3.1-70b-h100.yaml", prefill=stages, decode=stages))
    missing = wait_for(
        lambda: (c := pools.condition(name, "Ready")) and c["reason"] == "LeaderWorkerSetMissing" and c,
        message="Ready=False, reason LeaderWorkerSetMissing",
    )
    assert "pipelineParallel=4" in missing["message"]
    assert pools.condition(name, "Planned")["status"] == "True"
    assert not [key for key in pools.children(name) if key[0] == "Deployment" and key[1] != f"{name}-router"]

    extensions = kubernetes.client.ApiextensionsV1Api(kube_api)
    extensions.create_custom_resource_definition(LWS_CRD)
    try:

        def groups() -> list[dict[str, Any]]:
            listed = pools.objects.list_namespaced_custom_object(
                "leaderworkerset.x-k8s.io", "v1", pools.namespace, "leaderworkersets"
            )
            return [item for item in listed["items"] if item["metadata"]["name"].startswith(name)]

        found = wait_for(
            lambda: len(groups()) == 2 and groups(), timeout=120, message="LeaderWorkerSets applied"
        )
        assert {g["spec"]["leaderWorkerTemplate"]["size"] for g in found} == {2}
        uid = pools.get(name)["metadata"]["uid"]
        assert all(owner_uids(g) == {uid} for g in found)
        wait_for(
            lambda: (c := pools.condition(name, "Ready")) and c["reason"] == "ReplicasNotReady",
            message="Ready=False while the groups start (no LeaderWorkerSet controller here)",
        )
    finally:
        pools.delete(name)
        extensions.delete_custom_resource_definition(LWS_CRD["metadata"]["name"])
