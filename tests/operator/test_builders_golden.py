"""The operator's rendered children, pinned as golden YAML (tests/golden/operator/).

A deliberate change to what the operator renders regenerates them: TANDEM_UPDATE_GOLDEN=1 pytest
tests/operator/test_builders_golden.py, then review the diff.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from operator_cases import (
    GATEWAY_API,
    GOLDEN,
    OLD_CLUSTER,
    WITH_GIE,
    WITH_LWS,
    example_spec,
    find,
    layout,
    pool,
    render,
    simulator_data_parallel,
    vllm_data_parallel,
    vllm_data_parallel_multi_node,
)

from tandem.cli import build_parser
from tandem.operator.build import Manifest, SharedRouter, desired_objects
from tandem.operator.naming import COMPONENT_LABEL, ROUTER_COMPONENT, Role
from tandem.operator.rbac import rbac_manifests
from tandem.operator.settings import Images
from tandem.operator.yamldump import dump_all
from tandem.router.cli import settings_from_args

UPDATE = os.environ.get("TANDEM_UPDATE_GOLDEN") == "1"


def _vllm_lmcache() -> list[Manifest]:
    spec = example_spec("llama-3.1-8b-h100.yaml")
    # The decoders' PD buffer as the plan sized it (planner/pd_buffer.py), rendered as pd_buffer_size.
    planned = layout(spec, tp=2, prefill=2, decode=3, pd_buffer_bytes=3 * 1024**3)
    return render(spec, planned, ref=pool("llama-8b"))


def _vllm_nixl_pvc() -> list[Manifest]:
    spec = example_spec(
        "llama-3.1-70b-h100.yaml", disaggregation={"kvTransfer": {"connector": "nixl"}, "mode": "Always"}
    )
    return render(spec, layout(spec, tp=4, prefill=2, decode=1), ref=pool("llama-70b"))


def _simulator() -> list[Manifest]:
    spec = example_spec("simulator-pool.yaml")
    return render(spec, layout(spec, tp=1, prefill=1, decode=2), ref=pool("sim-llama"), network_policy=True)


def _simulator_mla() -> list[Manifest]:
    """A simulated DeepSeek-V3 (MLA) at TP 8: the simulator gets its KV size and attention."""
    spec = example_spec(
        "simulator-pool.yaml", model={"name": "deepseek-ai/DeepSeek-V3"}, accelerator={"type": "H200-141GB"}
    )
    return render(spec, layout(spec, tp=8, prefill=1, decode=1), ref=pool("sim-deepseek"))


def _vllm_multi_node() -> list[Manifest]:
    # Pipeline stages across nodes take NIXL: LMCache needs PP=1 (LMCACHE_SINGLE_STAGE).
    spec = example_spec(
        "llama-3.1-70b-h100.yaml",
        decode={"tensorParallel": 8, "pipelineParallel": 2},
        disaggregation={"kvTransfer": {"connector": "nixl"}},
    )
    return render(spec, layout(spec, tp=8, pp=2, prefill=1, decode=1), WITH_LWS, pool("llama-405b"))


def _vllm_heterogeneous() -> list[Manifest]:
    """Prefill on H200s in the pool's zone with its tolerations, decode on A100s with its own."""
    own_taint = {"key": "gpu-class", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}
    accelerator = {
        "nodeSelector": {"topology.kubernetes.io/zone": "us-east-1a"},
        "prefill": {"type": "H200-141GB"},
        "decode": {
            "type": "A100-80GB",
            "nodeSelector": {"topology.kubernetes.io/zone": "us-east-1b"},
            "tolerations": [own_taint],
        },
    }
    spec = example_spec("llama-3.1-70b-h100.yaml", accelerator=accelerator)
    return render(spec, layout(spec, tp=4, prefill=2, decode=1), ref=pool("llama-70b"))


def _vllm_gie() -> list[Manifest]:
    """The Gateway API Inference Extension InferencePool, alone: the rest is as in vllm-lmcache-tp2."""
    spec = example_spec("llama-3.1-8b-h100.yaml", gatewayAPI=GATEWAY_API)
    objects = render(spec, layout(spec, tp=2, prefill=2, decode=3), WITH_GIE, pool("llama-8b"))
    return [o for o in objects if o["apiVersion"] == WITH_GIE.gie_api_version]


def _simulator_external() -> list[Manifest]:
    """spec.autoscaling.mode External: the engine workloads, alone, leave their replicas and the
    replicas-owner annotation to the handover (and then the HPA)."""
    spec = example_spec("simulator-pool.yaml", autoscaling={"mode": "External"})
    planned = layout(spec, tp=1, prefill=1, decode=2)
    external = planned.model_copy(
        update={
            role.value: planned.role(role).model_copy(update={"external_replicas": True}) for role in Role
        }
    )
    objects = render(spec, external, ref=pool("sim-llama"))
    return [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] != "sim-llama-router"]


def _lmcache_parts(objects: list[Manifest], pool_name: str) -> list[Manifest]:
    """What the offload tiers change: the LMCache ConfigMaps and the engine Deployments."""
    return [
        o
        for o in objects
        if (o["kind"] == "ConfigMap" and "lmcache" in o["metadata"]["name"])
        or (o["kind"] == "Deployment" and o["metadata"]["name"] != f"{pool_name}-router")
    ]


def _vllm_lmcache_offload() -> list[Manifest]:
    """CPU and disk tiers at TP 2 on prefillers: 2 x 20 GiB more memory (over a 64 GiB limit the
    role sets), a 2 x 100 GiB emptyDir; decoders keep local_cpu false (they never save KV)."""
    offload = {"cpu": {"sizeGiB": 20}, "disk": {"sizeGiB": 100}}
    spec = example_spec(
        "llama-3.1-8b-h100.yaml", disaggregation={"kvTransfer": {"lmcache": {"offload": offload}}}
    )
    planned = layout(spec, tp=2, prefill=2, decode=3)
    limited = planned.prefill.model_copy(update={"resources": {"limits": {"memory": "64Gi"}}})
    objects = render(spec, planned.model_copy(update={"prefill": limited}), ref=pool("llama-8b"))
    return _lmcache_parts(objects, "llama-8b")


def _simulator_lmcache_remote() -> list[Manifest]:
    """CPU and remote tiers on a simulated pool: the same LMCache keys; no extra pod memory."""
    offload = {"cpu": {"sizeGiB": 2.5}, "remote": {"url": "lm://lmcache-server:65432"}}
    spec = example_spec(
        "simulator-pool.yaml", disaggregation={"kvTransfer": {"lmcache": {"offload": offload}}}
    )
    objects = render(spec, layout(spec, tp=1, prefill=1, decode=2), ref=pool("sim-llama"))
    return _lmcache_parts(objects, "sim-llama")


def _simulator_shared_router() -> list[Manifest]:
    """Two pools of different models through one router (spec.router.shared: chat), as sim-llama
    renders it, router objects alone: chat's, owned by both pools and serving both, and sim-llama's
    own notification Service and NetworkPolicy, pointed at chat's pods."""
    spec = example_spec("simulator-pool.yaml", router={"shared": "chat"})
    llama = pool("sim-llama", shared_router="chat")
    qwen = pool("sim-qwen", "6f1c2d3e-0000-4000-8000-000000000002", shared_router="chat")
    shared = SharedRouter(name="chat", members=(llama, qwen), spec=spec, notify_port=7500)
    objects = render(spec, layout(spec), ref=llama, network_policy=True, shared=shared)
    return [o for o in objects if o["metadata"]["labels"][COMPONENT_LABEL] == ROUTER_COMPONENT]


def _simulator_aggregated_router() -> list[Manifest]:
    """An LMCache pool planned aggregated (no prefillers): its router objects alone, with no
    notification port, Service or NetworkPolicy, since nothing can notify it."""
    spec = example_spec("simulator-pool.yaml")
    objects = render(spec, layout(spec, prefill=0), ref=pool("sim-aggregated"), network_policy=True)
    return [o for o in objects if o["metadata"]["labels"][COMPONENT_LABEL] == ROUTER_COMPONENT]


def _simulator_traced() -> list[Manifest]:
    """spec.router.tracing: the router's OTEL_* environment, the engines' --otlp-traces-endpoint and
    exporter protocol; the Deployments alone, the rest is as in simulator-lmcache."""
    tracing = {"endpoint": "http://otel-collector.monitoring:4318/v1/traces", "samplingRatio": 0.25}
    spec = example_spec("simulator-pool.yaml", router={"tracing": tracing})
    objects = render(spec, layout(spec, tp=1, prefill=1, decode=1), ref=pool("sim-traced"))
    return [o for o in objects if o["kind"] == "Deployment"]


CASES: dict[str, Callable[[], list[Manifest]]] = {
    "vllm-lmcache-offload": _vllm_lmcache_offload,
    "simulator-lmcache-remote": _simulator_lmcache_remote,
    "vllm-nixl-dp-ep": vllm_data_parallel,
    "vllm-nixl-dp-ep-multi-node-lws": vllm_data_parallel_multi_node,
    "simulator-dp-ep": simulator_data_parallel,
    "vllm-lmcache-tp2": _vllm_lmcache,
    "vllm-nixl-pvc": _vllm_nixl_pvc,
    "simulator-lmcache": _simulator,
    "simulator-shared-router": _simulator_shared_router,
    "simulator-aggregated-router": _simulator_aggregated_router,
    "simulator-external-replicas": _simulator_external,
    "simulator-mla-tp8": _simulator_mla,
    "simulator-traced": _simulator_traced,
    "vllm-multi-node-lws": _vllm_multi_node,
    "vllm-heterogeneous": _vllm_heterogeneous,
    "vllm-lmcache-gie": _vllm_gie,
    "operator-rbac": lambda: rbac_manifests("tandem-system"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_objects_match_golden_file(case: str) -> None:
    rendered = dump_all(CASES[case]())
    path = GOLDEN / f"{case}.yaml"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered)
    assert path.exists(), f"{path} is missing: run with TANDEM_UPDATE_GOLDEN=1"
    assert rendered == path.read_text(), f"{case} differs from {path}; TANDEM_UPDATE_GOLDEN=1 regenerates"


def test_old_cluster_gets_beta_disruption_budgets() -> None:
    kinds = {(o["apiVersion"], o["kind"]) for o in _vllm_lmcache()}
    assert ("policy/v1beta1", "PodDisruptionBudget") in kinds
    assert OLD_CLUSTER.lws_api_version is None


def test_pods_run_as_the_images_user_unless_told_to_keep_theirs() -> None:
    spec = example_spec("simulator-pool.yaml")
    for images, expected in ((Images(), 65532), (Images(run_as_user=None), None)):
        objects = desired_objects(pool("sim"), spec, layout(spec), images, OLD_CLUSTER)
        for deployment in (o for o in objects if o["kind"] == "Deployment"):
            context = deployment["spec"]["template"]["spec"]["securityContext"]
            assert context.get("runAsUser") == expected
            assert context.get("runAsNonRoot") is (True if expected else None)
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_router_debug_mode_is_off_unless_the_pool_asks() -> None:
    """The router's args parse as `tandem router` parses them: debug (engine URLs shown to clients)
    only with spec.router.debug."""

    def router_debug(**router: object) -> bool:
        spec = example_spec("simulator-pool.yaml", router=router)
        deployment = find(render(spec, layout(spec)), "Deployment", "llama-router")
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return settings_from_args(build_parser("router").parse_args(["router", *args]), {}).debug

    assert router_debug() is False
    assert router_debug(debug=True) is True
