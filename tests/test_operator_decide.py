"""From a pool object to what should exist, with the real planner: plans, pins, problems."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tandem.operator.capabilities import Capabilities
from tandem.operator.decide import Decision, decide
from tandem.operator.planning import catalog_planner
from tandem.operator.settings import Images

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PLANNER = catalog_planner()
OLD = Capabilities(pdb_api_version="policy/v1beta1")
LWS = Capabilities(pdb_api_version="policy/v1", lws_api_version="leaderworkerset.x-k8s.io/v1")


def pool_body(example: str = "simulator-pool.yaml", name: str | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / example).read_text())
    body["metadata"].update(namespace="serving", uid="uid-1", generation=3)
    if name is not None:
        body["metadata"]["name"] = name
    for path, value in spec.items():
        node = body["spec"]
        *parents, leaf = path.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return body


def run(body: dict[str, Any], caps: Capabilities = OLD) -> Decision:
    return decide(body, caps, Images(), PLANNER)


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
