"""Pools and resolved layouts the operator's builder tests render (no planner, no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tandem.api import EngineTiming, InferencePool, InferencePoolSpec
from tandem.operator.build import Manifest, SharedRouter, desired_objects
from tandem.operator.capabilities import Capabilities
from tandem.operator.layout import PoolLayout, RoleLayout
from tandem.operator.naming import PoolRef, Role
from tandem.operator.placement import GFD_PRODUCT_LABEL, role_placement
from tandem.operator.settings import Images
from tandem.planner import load_catalog
from tandem.planner.calibration import VLLM_GPU_MEMORY_UTILIZATION

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden" / "operator"
TIMING = EngineTiming(
    prefill_base_ms=12.5,
    prefill_ms_per_token=0.03,
    decode_step_base_ms=8.0,
    decode_ms_per_seq=0.02,
    max_num_seqs=128,
    max_num_batched_tokens=8192,
    kv_capacity_tokens=400_000,
)
OLD_CLUSTER = Capabilities(pdb_api_version="policy/v1beta1")
WITH_LWS = Capabilities(pdb_api_version="policy/v1", lws_api_version="leaderworkerset.x-k8s.io/v1")
WITH_GIE = Capabilities(pdb_api_version="policy/v1", gie_api_version="inference.networking.k8s.io/v1")
# spec.gatewayAPI naming an endpoint picker (wire names).
GATEWAY_API = {"endpointPicker": {"name": "llama-epp", "port": 9002, "failureMode": "FailOpen"}}


def example_spec(name: str, **changes: Any) -> InferencePoolSpec:
    """An example's spec, with top-level spec sections merged from ``changes`` (wire names)."""
    document = yaml.safe_load((EXAMPLES / name).read_text())
    for section, values in changes.items():
        document["spec"][section] = {**document["spec"].get(section, {}), **values}
    return InferencePool.model_validate(document).spec


def layout(
    spec: InferencePoolSpec,
    *,
    tp: int = 1,
    pp: int = 1,
    prefill: int = 1,
    decode: int = 1,
    threshold: int | None = 1024,
    pd_buffer_bytes: int | None = None,
) -> PoolLayout:
    """A hand-made layout; `pd_buffer_bytes`, the decoders' PD buffer as a plan sizes it."""

    def role(which: Role, replicas: int) -> RoleLayout:
        own = spec.accelerator.prefill if which is Role.PREFILL else spec.accelerator.decode
        gpu = load_catalog().gpu(own.type if own else spec.accelerator.type)
        node_selector, tolerations = role_placement(spec, which, gpu.device_name, GFD_PRODUCT_LABEL)
        return RoleLayout(
            role=which,
            gpu_type=gpu.name,
            tensor_parallel=tp,
            pipeline_parallel=pp,
            replicas=replicas,
            gpus_per_node=spec.accelerator.gpus_per_node,
            node_selector=node_selector,
            tolerations=tolerations,
            timing=TIMING,
            gpu_memory_utilization=VLLM_GPU_MEMORY_UTILIZATION,
            pd_buffer_bytes=pd_buffer_bytes if which is Role.DECODE else None,
        )

    return PoolLayout(
        prefill=role(Role.PREFILL, prefill),
        decode=role(Role.DECODE, decode),
        prompt_tokens_threshold=threshold,
        connector=spec.disaggregation.connector,
        max_model_len=spec.model.max_model_len,
        hands_off=prefill > 0,
    )


def data_parallel(
    placed: PoolLayout, role: Role, dp: int, *, tp: int = 1, ep: bool = True, all2all: str | None = None
) -> PoolLayout:
    """`placed` with one role's replicas made DP ranks of `tp` GPUs (the planner's DP/EP layouts)."""
    update = {"data_parallel": dp, "tensor_parallel": tp, "expert_parallel": ep, "all2all_backend": all2all}
    return placed.model_copy(update={role.value: placed.role(role).model_copy(update=update)})


def pool(
    name: str, uid: str = "6f1c2d3e-0000-4000-8000-000000000001", shared_router: str | None = None
) -> PoolRef:
    return PoolRef(name=name, namespace="serving", uid=uid, shared_router=shared_router)


def render(
    spec: InferencePoolSpec,
    placed: PoolLayout,
    caps: Capabilities = OLD_CLUSTER,
    ref: PoolRef | None = None,
    *,
    network_policy: bool = False,
    shared: SharedRouter | None = None,
) -> list[Manifest]:
    return desired_objects(
        ref or pool("llama"), spec, placed, Images(), caps, network_policy=network_policy, shared=shared
    )


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def engine_container(objects: list[Manifest], pool_name: str, role: str) -> Manifest:
    deployment = find(objects, "Deployment", f"{pool_name}-{role}")
    container: Manifest = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def env(container: Manifest) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def deepseek_nixl() -> InferencePoolSpec:
    """DeepSeek-V3 on H200s with vLLM and NIXL (LMCache takes no DP ranks: LMCACHE_NO_DATA_PARALLEL)."""
    return example_spec(
        "llama-3.1-8b-h100.yaml",
        model={"name": "deepseek-ai/DeepSeek-V3", "dtype": "fp8"},
        accelerator={"type": "H200-141GB"},
        disaggregation={"kvTransfer": {"connector": "nixl"}, "mode": "Always"},
    )


def vllm_data_parallel() -> list[Manifest]:
    """One node per replica: prefill TP8; decode DP4 x TP2 with EP over the 8 GPUs (DeepEP low
    latency), one pod running the four ranks behind one API server."""
    spec = deepseek_nixl()
    placed = data_parallel(
        layout(spec, tp=8, prefill=1, decode=2), Role.DECODE, 4, tp=2, all2all="deepep_low_latency"
    )
    return render(spec, placed, ref=pool("deepseek"))


def vllm_data_parallel_multi_node() -> list[Manifest]:
    """Replicas over two nodes (LeaderWorkerSets): prefill DP8 x TP2 with DeepEP high throughput,
    decode DP16 x TP1 with DeepEP low latency; the leader serves, the second node runs its ranks
    headless."""
    spec = deepseek_nixl()
    placed = layout(spec, prefill=1, decode=1)
    placed = data_parallel(placed, Role.PREFILL, 8, tp=2, all2all="deepep_high_throughput")
    placed = data_parallel(placed, Role.DECODE, 16, all2all="deepep_low_latency")
    objects = render(spec, placed, WITH_LWS, pool("deepseek"))
    return [o for o in objects if o["kind"] == "LeaderWorkerSet"]


def simulator_data_parallel() -> list[Manifest]:
    """A simulated Qwen3-30B-A3B decoding on DP4 x TP1 with EP (aggregated): one process, four ranks."""
    spec = example_spec(
        "simulator-pool.yaml",
        model={"name": "Qwen/Qwen3-30B-A3B"},
        disaggregation={"mode": "Never", "kvTransfer": {"connector": "none"}},
    )
    placed = data_parallel(
        layout(spec, prefill=0, decode=1, threshold=None), Role.DECODE, 4, all2all="allgather_reducescatter"
    )
    objects = render(spec, placed, ref=pool("sim-qwen"))
    return [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "sim-qwen-decode"]
