"""From a pool object to what should exist, with the real planner: plans, pins, problems."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from operator_decisions import LWS, OLD, PLANNER, pool_body, run

from tandem.operator.decide import decide
from tandem.operator.settings import Images


def test_disaggregated_simulator_pool_renders_every_child() -> None:
    decision = run(pool_body(disaggregation__mode="Always"))
    assert decision.problem is None and decision.objects is not None
    names = {(o["kind"], o["metadata"]["name"]) for o in decision.objects}
    for role in ("prefill", "decode"):
        assert {("Deployment", f"sim-llama-{role}"), ("Service", f"sim-llama-{role}")} <= names
        assert ("ConfigMap", f"sim-llama-{role}-lmcache") in names
    assert {("Deployment", "sim-llama-router"), ("Service", "sim-llama-router")} <= names
    assert decision.desired is not None and decision.desired["prefill"] >= 1
    assert decision.generation == 3
    assert decision.endpoint == "http://sim-llama-router.serving.svc.cluster.local:8000/v1"
    assert decision.plan is not None and decision.plan.feasible


def test_pinned_fields_win_over_the_plan_and_show_in_the_plan_status() -> None:
    decision = run(
        pool_body(disaggregation__mode="Always", decode__replicas=3, disaggregation__promptTokensThreshold=64)
    )
    assert decision.layout is not None and decision.plan is not None
    assert decision.layout.decode.replicas == 3 and decision.plan.decode is not None
    assert decision.plan.decode.replicas == 3
    assert decision.plan.prompt_tokens_threshold == 64
    assert decision.desired is not None and decision.desired["decode"] == 3


def test_big_model_on_one_small_gpu_is_infeasible_with_the_planners_reason() -> None:
    body = pool_body(model__name="meta-llama/Llama-3.1-70B-Instruct", accelerator__type="L4")
    decision = run(body)
    assert decision.objects is None and decision.problem is not None
    assert decision.problem.reason == "Infeasible"
    assert "L4" in decision.problem.message
    assert decision.plan is not None and not decision.plan.feasible


def test_pin_the_planner_cannot_honour_is_infeasible() -> None:
    decision = run(pool_body(decode__tensorParallel=16))
    assert decision.problem is not None and decision.problem.reason == "Infeasible"
    assert "pinned TP=16" in decision.problem.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (pool_body(model__name="acme/never-heard-of-it"), "spec.model.name"),
        (pool_body(accelerator__type="TPU-v9"), "spec.accelerator.type"),
        (
            pool_body(disaggregation__mode="Always", prefill__tensorParallel=2, decode__tensorParallel=4),
            "spec.prefill",
        ),
        (pool_body(name="a" * 50), "metadata.name"),
        (pool_body(workload__promptTokens={"mean": 100, "p90": 10}), "spec.workload.promptTokens"),
    ],
    ids=["unknown-model", "unknown-gpu", "lmcache-tp-mismatch", "long-name", "schema"],
)
def test_invalid_spec_names_the_field(body: dict[str, Any], field: str) -> None:
    decision = run(body)
    assert decision.objects is None and decision.problem is not None
    assert decision.problem.reason == "InvalidSpec"
    assert decision.problem.message.startswith(field), decision.problem.message


def test_multi_node_instances_need_a_leader_worker_set() -> None:
    body = pool_body(
        "llama-3.1-70b-h100.yaml",
        engine__type="vllm",
        disaggregation__kvTransfer={"connector": "nixl"},
        prefill__tensorParallel=4,
        prefill__pipelineParallel=4,
        decode__tensorParallel=4,
        decode__pipelineParallel=4,
    )
    body["spec"]["accelerator"]["gpusPerNode"] = 8
    missing = run(copy.deepcopy(body), OLD)
    assert missing.problem is not None and missing.problem.reason == "LeaderWorkerSetMissing"
    assert missing.problem.planned and "pipelineParallel=4" in missing.problem.message
    deployed = run(body, LWS)
    assert deployed.objects is not None
    groups = [o for o in deployed.objects if o["kind"] == "LeaderWorkerSet"]
    assert {g["spec"]["leaderWorkerTemplate"]["size"] for g in groups} == {2}


def _connector_traces(objects: list[dict[str, Any]]) -> list[str]:
    """Whatever a KV connector would add to a pool's objects."""
    found = [
        f"{o['kind']}/{o['metadata']['name']}" for o in objects if o["kind"] in ("ConfigMap", "NetworkPolicy")
    ]
    found += [o["metadata"]["name"] for o in objects if o["metadata"]["name"].endswith("kv-notify")]
    for workload in (
        o for o in objects if o["kind"] == "Deployment" and "router" not in o["metadata"]["name"]
    ):
        pod = workload["spec"]["template"]["spec"]
        container = pod["containers"][0]
        found += [arg for arg in container["args"] if arg == "--kv-transfer-config"]
        found += [
            e["name"] for e in container["env"] if e["name"].startswith(("LMCACHE", "UCX", "VLLM_NIXL"))
        ]
        found += [p["name"] for p in container.get("ports", []) if p["name"] != "http"]
        found += [v["name"] for v in pod["volumes"] if v["name"] not in ("shm", "cache")]
    return found


@pytest.mark.parametrize("connector", ["lmcache", "nixl"])
def test_an_aggregated_pool_renders_no_kv_connector(connector: str) -> None:
    """Mode Never hands nothing off, whatever kvTransfer.connector says (lmcache by default): before,
    its decoders still loaded LMCache's PD receiver (a 2 GiB pd_buffer per rank, held for nothing)
    or opened NIXL's side channel, and the router got a notification Service."""
    body = pool_body(disaggregation__mode="Never", disaggregation__kvTransfer={"connector": connector})
    decision = decide(body, OLD, Images(), PLANNER, network_policy=True)
    assert decision.problem is None and decision.objects is not None and decision.layout is not None
    assert decision.layout.connector == "none"
    assert _connector_traces(decision.objects) == []
    disaggregated = run(pool_body(disaggregation__kvTransfer={"connector": connector}))
    assert disaggregated.objects is not None and _connector_traces(disaggregated.objects)  # the premise


def test_an_aggregated_pool_may_have_pipeline_stages_whatever_its_connector_field() -> None:
    """LMCache's one-stage rule binds its handoffs only; before, it refused an aggregated pool's PP pin."""
    decision = run(pool_body(disaggregation__mode="Never", decode__pipelineParallel=2))
    assert decision.problem is None, decision.problem
    assert decision.layout is not None and decision.layout.decode.pipeline_parallel == 2


def test_connector_none_is_refused_where_handoffs_may_happen() -> None:
    decision = run(pool_body(disaggregation__mode="Auto", disaggregation__kvTransfer={"connector": "none"}))
    assert decision.problem is not None and decision.problem.reason == "InvalidSpec"
    assert decision.problem.message.startswith("spec.disaggregation: ")
    assert "connector none hands no KV off: it needs mode Never" in decision.problem.message
    assert run(
        pool_body(disaggregation__mode="Never", disaggregation__kvTransfer={"connector": "none"})
    ).objects


@pytest.mark.parametrize(
    ("tensor_parallel", "max_model_len", "needs"),
    [
        (1, 8192, "8192-token"),  # 132 GiB of weights on one 80 GB GPU
        (2, None, "131072-token"),  # weights fit, the model's 128K context does not: vLLM refuses to start
    ],
)
def test_a_pinned_layout_without_room_for_the_engines_context_is_infeasible(
    tensor_parallel: int, max_model_len: int | None, needs: str
) -> None:
    body = pool_body(
        model__name="meta-llama/Llama-3.1-70B-Instruct",
        model__maxModelLen=max_model_len,
        accelerator__type="H100-80GB",
        prefill__tensorParallel=tensor_parallel,
        decode__tensorParallel=tensor_parallel,
        decode__replicas=2,
    )
    decision = run(body)
    assert decision.objects is None and decision.problem is not None
    assert decision.problem.reason == "Infeasible"
    assert f"TP={tensor_parallel}" in decision.problem.message and needs in decision.problem.message
    assert "spec.model.maxModelLen" in decision.problem.message


def test_the_same_pin_with_a_context_that_fits_renders() -> None:
    body = pool_body(
        model__name="meta-llama/Llama-3.1-70B-Instruct",
        model__maxModelLen=16384,
        accelerator__type="H100-80GB",
        decode__tensorParallel=2,
        prefill__tensorParallel=2,
        decode__replicas=2,
    )
    decision = run(body)
    assert decision.problem is None and decision.layout is not None
    assert decision.layout.decode.timing.kv_capacity_tokens >= 16384


@pytest.mark.parametrize(("mode", "notified"), [("Always", True), ("Auto", False), ("Never", False)])
def test_only_a_pool_with_prefillers_gets_a_notification_port(mode: str, notified: bool) -> None:
    """At this traffic mode Auto plans aggregated serving: no prefiller could notify the router."""
    decision = run(pool_body(disaggregation__mode=mode))
    assert decision.objects is not None
    router = next(
        o
        for o in decision.objects
        if o["metadata"]["name"] == "sim-llama-router" and o["kind"] == "Deployment"
    )
    assert ("--notify-port" in router["spec"]["template"]["spec"]["containers"][0]["args"]) is notified
    assert any(o["metadata"]["name"] == "sim-llama-kv-notify" for o in decision.objects) is notified
