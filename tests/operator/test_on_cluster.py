"""The operator against the devcluster: real apiserver and controller-manager, pods run as processes.

The operator runs in-process (its own thread and event loop) and watches the test's namespace.
Simulator pools run for real (`tandem sim` engines and `tandem router`); vLLM pools cannot run
here, which suits tests about objects only.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.watch
import pytest
from operator_cluster import CHILD_KINDS, OperatorThread, PoolApi, example, operator_under_rbac

from tandem.api import GROUP, PLURAL, VERSION
from tandem.devcluster.testing import ClusterUnderTest, delete_crd, ready_endpoints, wait_for

pytestmark = pytest.mark.cluster


SIM = "sim-llama"  # examples/simulator-pool.yaml: both roles (disaggregation mode Always)


def owner_uids(child: dict[str, Any]) -> set[str]:
    return {ref["uid"] for ref in child["metadata"].get("ownerReferences") or [] if ref.get("controller")}


def test_simulator_pool_becomes_ready_with_owned_children(
    pools: PoolApi, operator: OperatorThread, kube_api: kubernetes.client.ApiClient
) -> None:
    uid = pools.create(example("simulator-pool.yaml"))["metadata"]["uid"]
    wait_for(lambda: pools.ready(SIM), timeout=180, message="pool Ready=True")

    children = pools.children(SIM)
    expected = {
        *(("Deployment", f"{SIM}-{c}") for c in ("prefill", "decode", "router")),
        *(("Service", f"{SIM}-{c}") for c in ("prefill", "decode", "router", "kv-notify")),
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


# The reasons a fresh pool passes through on its way to Ready, per condition.
ROLLOUT_REASONS = {
    "Planned": {"Planned"},
    "Progressing": {"RollingOut", "RolloutComplete"},
    "Ready": {"ReplicasNotReady", "AllReplicasReady"},
    "Degraded": {"NotServing", "RollingOut", "AllReplicasReady"},
}


def test_fresh_pool_reaches_ready_without_a_failure_reason(
    devcluster: ClusterUnderTest,
    kube_api: kubernetes.client.ApiClient,
    pools: PoolApi,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Every condition a new pool shows, from creation to Ready, with the operator held to its own
    RBAC as when deployed: none may name a failure. (Before: its first apply raced the router's
    RoleBinding against its Role; the API server refuses a binding to a Role it cannot see yet
    (404: its RBAC escalation check looks the Role up), so every pool showed ``ApplyFailed`` for
    a second. And a pool whose router and decoder were up before its prefillers showed
    ``Degraded`` during its first rollout.)"""
    seen: list[tuple[str, str, str, str]] = []  # (type, status, reason, message), as they change
    with operator_under_rbac(kube_api, devcluster.kubeconfig, namespace, tmp_path) as running:
        listed = pools.objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        pools.create(example("simulator-pool.yaml"))
        watch = kubernetes.watch.Watch()
        for event in watch.stream(
            pools.objects.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            resource_version=listed["metadata"]["resourceVersion"],
            timeout_seconds=180,
        ):
            conditions = (event["object"].get("status") or {}).get("conditions") or []
            for c in conditions:
                shown = (c["type"], c["status"], c["reason"], c["message"])
                if [s for s in seen if s[0] == c["type"]][-1:] != [shown]:
                    seen.append(shown)
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                watch.stop()
        warnings = [(e.reason, e.message) for e in pools.events(SIM) if e.type == "Warning"]
        errors = running.metric("tandem_operator_reconcile_errors_total")
    assert ("Ready", "True", "AllReplicasReady") in {s[:3] for s in seen}, seen
    unexpected = [s for s in seen if s[2] not in ROLLOUT_REASONS[s[0]]]
    assert unexpected == [], seen
    assert warnings == []
    assert errors == 0


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
    plan_after = wait_for(
        lambda: (plan := pools.get(name)["status"]["plan"]) != plan_before and plan,
        message="a new plan for the new rate",
    )
    decode = plan_after["decode"]

    def rendered_for_the_new_plan() -> dict[str, Any] | None:
        d = decode_deployment()
        fits = d is not None and d["spec"]["replicas"] == decode["replicas"]
        return d if fits and int(tp(d)) == decode["tensorParallel"] else None

    changed = wait_for(rendered_for_the_new_plan, message="decode Deployment re-rendered for the new rate")
    assert (changed["spec"]["replicas"], tp(changed)) != (before["spec"]["replicas"], tp(before))
    limits = engine(changed)["resources"]["limits"]["nvidia.com/gpu"]
    assert int(limits) == plan_after["decode"]["tensorParallel"] * plan_after["decode"]["pipelineParallel"]

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
    # The Warning Event follows the status write: the baseline counts both.
    wait_for(
        lambda: any(e.reason == "Infeasible" for e in pools.events(name)), message="the Infeasible Event"
    )
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


def test_pools_that_cannot_work_are_refused_before_anything_is_created(
    pools: PoolApi, operator: OperatorThread
) -> None:
    """Before: a million replicas made Deployments of a million pods; an env name the operator sets
    made every apply fail with 500 "duplicate entries" (no condition, no Event, no engines)."""
    with pytest.raises(kubernetes.client.ApiException) as refused:
        pools.create(example("simulator-pool.yaml", decode={"replicas": 1_000_000}))
    assert refused.value.status == 422 and "spec.decode.replicas" in str(refused.value.body)

    clash = example("simulator-pool.yaml", engine={"env": [{"name": "PYTHONHASHSEED", "value": "0"}]})
    clash["metadata"]["name"] = "env-clash"
    over_budget = example("simulator-pool.yaml")
    over_budget["metadata"]["name"] = "over-budget"
    over_budget["spec"]["maxGpus"] = 1
    expected = {
        "env-clash": ("InvalidSpec", "spec.engine.env[0].name: PYTHONHASHSEED is managed by the operator"),
        "over-budget": ("Infeasible", "over the budget of 1 (spec.maxGpus)"),
    }
    for body in (clash, over_budget):
        pools.create(body)
    for name, (reason, message) in expected.items():
        condition = wait_for(
            lambda name=name: (c := pools.condition(name, "Planned")) and c["status"] == "False" and c,
            message=f"{name}: Planned=False",
        )
        assert condition["reason"] == reason and message in condition["message"], condition
        assert pools.children(name) == {}
        assert [e.type for e in pools.events(name) if e.reason == reason] == ["Warning"]
    assert operator.metric("tandem_operator_reconcile_errors_total") == 0


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
        wait_for(lambda: pools.ready(SIM), timeout=180, message="pool Ready=True after the restart")
    finally:
        second.stop()
    kinds = [kind for kind, _ in pools.children(SIM)]
    assert {kind: kinds.count(kind) for kind in CHILD_KINDS} == {
        "Deployment": 3,
        "Service": 4,  # prefill, decode, router, and the router's kv-notify
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
    nixl = {"kvTransfer": {"connector": "nixl"}}  # pipeline stages take NIXL (LMCache needs PP=1)
    pools.create(example("llama-3.1-70b-h100.yaml", prefill=stages, decode=stages, disaggregation=nixl))
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

        # The CRD goes while the pool runs, its LeaderWorkerSets with it (whose events may come
        # before the CRD's): the pool waits for one again, which is no reconcile error.
        delete_crd(kube_api, LWS_CRD["metadata"]["name"], timeout=120)
        wait_for(
            lambda: (c := pools.condition(name, "Ready")) and c["reason"] == "LeaderWorkerSetMissing",
            message="Ready=False, reason LeaderWorkerSetMissing once the CRD is gone",
        )
        assert operator.metric("tandem_operator_reconcile_errors_total") == 0
    finally:
        pools.delete(name)
        delete_crd(kube_api, LWS_CRD["metadata"]["name"])


def test_moe_pool_with_an_expert_parallel_plan_serves_through_the_router(
    pools: PoolApi, operator: OperatorThread, kube_api: kubernetes.client.ApiClient
) -> None:
    """Qwen3-30B-A3B at 20 requests/s of 2,048-token prompts over NIXL: the planner prefills on DP2 x
    TP1 with EP, the
    simulated prefill replica runs both ranks behind one server, and a long prompt's handoff
    through it, like a short prompt, comes back through the router."""
    pools.create(
        example(
            "simulator-pool.yaml",
            model={"name": "Qwen/Qwen3-30B-A3B", "maxModelLen": 16384},
            workload={"requestsPerSecond": 20, "promptTokens": {"mean": 2048}},
            disaggregation={"kvTransfer": {"connector": "nixl"}},
        )
    )
    wait_for(lambda: pools.ready(SIM), timeout=180, message="pool Ready=True")
    planned = pools.get(SIM)["status"]["plan"]
    assert planned["prefill"]["dataParallel"] == 2 and planned["prefill"]["expertParallel"], planned
    threshold = planned["promptTokensThreshold"]

    (router_ip, port), *_ = wait_for(
        lambda: ready_endpoints(kube_api, pools.namespace, f"{SIM}-router"), message="router endpoints"
    )
    routes = {}
    for label, words in (("short", 8), ("long", 2 * threshold)):
        body = json.dumps({"model": "Qwen/Qwen3-30B-A3B", "prompt": "hello " * words, "max_tokens": 4})
        request = urllib.request.Request(
            f"http://{router_ip}:{port}/v1/completions", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
            routes[label] = response.headers.get("x-tandem-route")
        assert answer["choices"][0]["text"] and answer["usage"]["completion_tokens"] == 4, answer
    assert routes == {"short": "direct" if threshold > 16 else "pd", "long": "pd"}, (routes, threshold)

    ((prefill_ip, prefill_port),) = ready_endpoints(kube_api, pools.namespace, f"{SIM}-prefill")
    with urllib.request.urlopen(f"http://{prefill_ip}:{prefill_port}/metrics", timeout=10) as response:
        exposition = response.read().decode()
    for rank in ("0", "1"):  # one endpoint, both ranks' engines behind it
        assert f'vllm:num_requests_running{{engine="{rank}"' in exposition
