"""DP/EP replicas as the operator renders them (the golden cases vllm-nixl-dp-ep and
vllm-nixl-dp-ep-multi-node-lws), parsed as vLLM 0.33 parses them (tests/protocol_facts.py, with
the file and line of every flag) and held to vLLM's launch rules:

- the API server's load balancing (entrypoints/cli/serve.py:69-77, 83-104, 116-128): without
  --data-parallel-rank / --data-parallel-external-lb / --data-parallel-hybrid-lb /
  --data-parallel-start-rank it is internal: one API server front (data_parallel_size processes)
  for all the replica's ranks, which the router sees as one endpoint; --headless starts none and
  runs the node's ranks (run_headless);
- engine/arg_utils.py:2486-2510: --data-parallel-size-local with no start rank makes rank 0 the
  first local rank; a start rank on a headless node stays out of hybrid load balancing;
- ranks on secondary nodes reach the head at --data-parallel-address:--data-parallel-rpc-port,
  the same on every node (engine/arg_utils.py:1270-1276, 2539-2565);
- a pod holds its node's ranks of TP GPUs each; the NIXL side channel of each rank is its own
  port, 5600 + the global DP rank.
"""

from __future__ import annotations

import argparse
import re
import shlex
from typing import Any

from operator_cases import (
    data_parallel,
    deepseek_nixl,
    find,
    layout,
    pool,
    render,
    vllm_data_parallel,
    vllm_data_parallel_multi_node,
)
from operator_decisions import OLD, PLANNER, pool_body, run
from protocol_facts import NIXL_SIDE_CHANNEL_PORT, VLLM_PARALLEL_FLAGS

from tandem.api import InferencePoolSpec
from tandem.operator.build import Manifest
from tandem.operator.decide import decide
from tandem.operator.naming import Role
from tandem.operator.settings import Images
from tandem.planner.connectors import LMCACHE_NO_DATA_PARALLEL

LEADER = "deepseek-decode-0.deepseek-decode.serving"  # what LeaderWorkerSet puts in LWS_LEADER_ADDRESS


def vllm_parallel_parser() -> argparse.ArgumentParser:
    """vLLM 0.33's parallel and launch flags, defined as vLLM defines them."""
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("model_tag", nargs="?")
    for name, alias, keywords in VLLM_PARALLEL_FLAGS:
        options = dict(keywords)
        if options.get("action") == "bool":
            options["action"] = argparse.BooleanOptionalAction
        parser.add_argument(*(n for n in (name, alias) if n), **options)
    return parser


def parsed(args: list[str]) -> argparse.Namespace:
    namespace, _ = vllm_parallel_parser().parse_known_args(args)
    return namespace


def load_balancing(args: argparse.Namespace) -> str:
    """vLLM's mode, as `vllm serve` decides it (entrypoints/cli/serve.py:83-104)."""
    external = args.data_parallel_external_lb or args.data_parallel_rank is not None
    hybrid = args.data_parallel_hybrid_lb or args.data_parallel_start_rank is not None
    assert external + hybrid <= 1
    return "headless" if args.headless else "external" if external else "hybrid" if hybrid else "internal"


def kubernetes_expand(text: str, env: dict[str, str]) -> str:
    """$(VAR) from the container's environment, $$ an escaped $ (Kubernetes' command expansion)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env[m[1]] if m[1] else "$", text)


def worker_args(pod: Manifest, index: int) -> list[str]:
    """The `vllm serve` words a worker pod's shell runs, at LWS_WORKER_INDEX `index`."""
    container = pod["containers"][0]
    assert container["command"] == ["sh", "-c"]
    line = kubernetes_expand(container["args"][0], {"LWS_LEADER_ADDRESS": LEADER})
    line = re.sub(r"\$\(\(LWS_WORKER_INDEX \* (\d+)\)\)", lambda m: str(index * int(m[1])), line)
    words = shlex.split(line)
    assert words[:3] == ["exec", "vllm", "serve"], words
    return words[3:]


def _gpus(pod: Manifest) -> int:
    return int(pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])


def test_a_single_node_dp_replica_is_one_pod_behind_one_api_server() -> None:
    container = find(vllm_data_parallel(), "Deployment", "deepseek-decode")["spec"]["template"]["spec"]
    engine: dict[str, Any] = container["containers"][0]
    args = parsed(engine["args"])
    assert (args.data_parallel_size, args.data_parallel_size_local, args.tensor_parallel_size) == (4, 4, 2)
    assert args.enable_expert_parallel and args.all2all_backend == "deepep_low_latency"
    assert args.data_parallel_address is None and args.data_parallel_backend == "mp"
    assert load_balancing(args) == "internal"
    assert _gpus(container) == args.data_parallel_size_local * args.tensor_parallel_size
    nixl = {p["name"]: p["containerPort"] for p in engine["ports"] if p["name"].startswith("nixl")}
    assert nixl == {f"nixl-side-{rank}": NIXL_SIDE_CHANNEL_PORT + rank for rank in range(4)}


def test_a_replica_over_nodes_runs_its_other_ranks_headless_from_their_first_rank() -> None:
    for lws in vllm_data_parallel_multi_node():
        template = lws["spec"]["leaderWorkerTemplate"]
        leader_pod, worker_pod = template["leaderTemplate"]["spec"], template["workerTemplate"]["spec"]
        leader_container = leader_pod["containers"][0]
        assert leader_container["command"] == ["vllm", "serve"]
        leader = parsed(
            [kubernetes_expand(a, {"LWS_LEADER_ADDRESS": LEADER}) for a in leader_container["args"]]
        )
        assert load_balancing(leader) == "internal" and leader.data_parallel_start_rank is None
        nodes = template["size"]
        per_node = leader.data_parallel_size_local
        assert nodes * per_node == leader.data_parallel_size and nodes == 2
        assert _gpus(leader_pod) == _gpus(worker_pod) == per_node * leader.tensor_parallel_size
        assert leader.data_parallel_address == LEADER and leader.data_parallel_rpc_port == 29550
        assert "--distributed-executor-backend" not in leader_container["args"]  # mp, not Ray
        for index in range(1, nodes):
            worker = parsed(worker_args(worker_pod, index))
            assert load_balancing(worker) == "headless"
            assert worker.data_parallel_start_rank == index * per_node
            same = ("data_parallel_size", "data_parallel_size_local", "data_parallel_address",
                    "data_parallel_rpc_port", "tensor_parallel_size", "enable_expert_parallel",
                    "all2all_backend")  # fmt: skip
            assert {k: getattr(worker, k) for k in same} == {k: getattr(leader, k) for k in same}


def test_a_dense_or_tp_only_replica_renders_no_data_parallel_flag() -> None:
    spec = deepseek_nixl()
    engine = find(render(spec, layout(spec, tp=8), ref=pool("deepseek")), "Deployment", "deepseek-decode")
    args = engine["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not [a for a in args if a.startswith(("--data-parallel", "--enable-expert", "--all2all"))]


def test_expert_parallel_over_one_tp_group_needs_no_data_parallel_flags() -> None:
    spec = deepseek_nixl()
    placed = data_parallel(layout(spec, tp=8), Role.DECODE, 1, tp=8)
    engine = find(render(spec, placed, ref=pool("deepseek")), "Deployment", "deepseek-decode")
    args = parsed(engine["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args.enable_expert_parallel and args.data_parallel_size == 1
    assert args.all2all_backend == "allgather_reducescatter"  # vLLM's default: nothing rendered


def _moe_pool(connector: str) -> dict[str, Any]:
    """The simulator pool serving Qwen3-30B-A3B at 20 requests/s of 2,048-token prompts, handoffs
    always: the planner prefills them on DP2 x TP1 with EP."""
    return pool_body(
        model__name="Qwen/Qwen3-30B-A3B",
        workload__requestsPerSecond=20,
        workload__promptTokens={"mean": 2048},
        disaggregation__kvTransfer={"connector": connector},
    )


def test_a_pool_whose_plan_takes_dp_and_ep_deploys_them() -> None:
    """The planner's DP/EP layouts reach the pods (PlanRequest.from_pool_spec searches them)."""
    decision = run(_moe_pool("nixl"))
    assert decision.problem is None and decision.layout is not None and decision.objects is not None
    prefill = decision.layout.prefill
    assert prefill.data_parallel > 1 and prefill.expert_parallel, prefill
    assert decision.plan is not None and decision.plan.prefill is not None
    assert decision.plan.prefill.data_parallel == prefill.data_parallel  # the router reads it there
    args = parsed(find(decision.objects, "Deployment", "sim-llama-prefill")["spec"]["template"]["spec"]
                  ["containers"][0]["args"])  # fmt: skip
    assert args.data_parallel_size == prefill.data_parallel and args.enable_expert_parallel


def test_lmcache_refuses_a_data_parallel_plan_naming_the_connector() -> None:
    """LMCache picks its PD ports by the TP rank (planner/connectors.py): a DP plan (made for NIXL
    here; the planner gives LMCache pools none) is refused, not deployed."""
    nixl = InferencePoolSpec.model_validate(_moe_pool("nixl")["spec"])
    decision = decide(_moe_pool("lmcache"), OLD, Images(), lambda spec: PLANNER(nixl))
    assert decision.objects is None and decision.problem is not None
    assert decision.problem.reason == "InvalidSpec"
    assert decision.problem.message.startswith("spec.disaggregation.kvTransfer.connector: the plan's DP=")
    assert LMCACHE_NO_DATA_PARALLEL in decision.problem.message
