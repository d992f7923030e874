"""Pools and resolved layouts the operator's builder tests render (no planner, no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tandem.api import EngineTiming, InferencePool, InferencePoolSpec, KvConnector
from tandem.operator.build import Manifest, desired_objects
from tandem.operator.capabilities import Capabilities
from tandem.operator.layout import PoolLayout, RoleLayout
from tandem.operator.naming import PoolRef, Role
from tandem.operator.settings import Images

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
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
) -> PoolLayout:
    def role(which: Role, replicas: int) -> RoleLayout:
        return RoleLayout(
            role=which,
            gpu_type=spec.accelerator.type,
            tensor_parallel=tp,
            pipeline_parallel=pp,
            replicas=replicas,
            gpus_per_node=spec.accelerator.gpus_per_node,
            node_selector=spec.accelerator.node_selector,
            tolerations=tuple(spec.accelerator.tolerations),
            timing=TIMING,
        )

    return PoolLayout(
        prefill=role(Role.PREFILL, prefill),
        decode=role(Role.DECODE, decode),
        prompt_tokens_threshold=threshold,
        connector=KvConnector(spec.disaggregation.kv_transfer.connector),
        max_model_len=spec.model.max_model_len,
    )


def pool(name: str, uid: str = "6f1c2d3e-0000-4000-8000-000000000001") -> PoolRef:
    return PoolRef(name=name, namespace="serving", uid=uid)


def render(
    spec: InferencePoolSpec, placed: PoolLayout, caps: Capabilities = OLD_CLUSTER, ref: PoolRef | None = None
) -> list[Manifest]:
    return desired_objects(ref or pool("llama"), spec, placed, Images(), caps)


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
