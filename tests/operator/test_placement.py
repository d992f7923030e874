"""Where engine pods go: per-role accelerators inherit the pool's placement, the GPU type is
always selected by GPU feature discovery's label, and what the user selects wins."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from paths import REPO

from tandem.api import InferencePool, InferencePoolSpec
from tandem.operator.capabilities import Capabilities
from tandem.operator.decide import decide
from tandem.operator.layout import PoolLayout, resolve_layout
from tandem.operator.placement import GFD_PRODUCT_LABEL, gfd_product
from tandem.operator.planning import catalog_planner
from tandem.operator.settings import Images, SettingsError, settings_from_env
from tandem.planner import load_catalog, plan_pool

EXAMPLES = REPO / "examples"
ZONE = "topology.kubernetes.io/zone"
GPU_TAINT = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def spec(accelerator: dict[str, Any], engine: str = "vllm") -> InferencePoolSpec:
    document = yaml.safe_load((EXAMPLES / "llama-3.1-8b-h100.yaml").read_text())
    document["spec"]["accelerator"] = {"gpusPerNode": 8, **accelerator}
    document["spec"]["engine"] = {"type": engine}
    document["spec"]["disaggregation"]["mode"] = "Always"
    return InferencePool.model_validate(document).spec


def resolved(pool: InferencePoolSpec, gpu_label: str = GFD_PRODUCT_LABEL) -> PoolLayout:
    plan = plan_pool(pool)
    assert plan.feasible, plan.reason
    return resolve_layout(pool, plan, gpu_label)


def test_a_role_on_its_own_gpu_type_keeps_the_pools_node_selector_and_tolerations() -> None:
    """Before: ``accelerator.prefill`` without a nodeSelector dropped the pool's, so prefill pods
    could land anywhere (and without the pool's tolerations)."""
    layout = resolved(
        spec(
            {
                "type": "H100-80GB",
                "nodeSelector": {ZONE: "us-east-1a"},
                "tolerations": [GPU_TAINT],
                "prefill": {"type": "H200-141GB"},
            }
        )
    )
    assert layout.prefill.node_selector == {ZONE: "us-east-1a", GFD_PRODUCT_LABEL: "NVIDIA-H200"}
    assert [t.to_wire() for t in layout.prefill.tolerations] == [GPU_TAINT]
    assert layout.decode.node_selector == {ZONE: "us-east-1a", GFD_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}


def test_the_gpu_type_is_selected_even_when_the_user_selects_nothing() -> None:
    """Before: a pool without a nodeSelector ran its engines on any node with GPUs, whatever
    their type, although the plan was sized for one."""
    layout = resolved(spec({"type": "H100", "decode": {"type": "A100-80GB"}}))
    assert layout.prefill.node_selector == {GFD_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3"}
    assert layout.decode.node_selector == {GFD_PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB"}


def test_a_selector_the_pool_sets_for_its_own_gpu_is_not_inherited_by_a_role_on_another() -> None:
    layout = resolved(
        spec(
            {
                "type": "H100-80GB",
                "nodeSelector": {GFD_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3-SHARED", ZONE: "a"},
                "decode": {"type": "A100-80GB"},
            }
        )
    )
    assert layout.prefill.node_selector == {GFD_PRODUCT_LABEL: "NVIDIA-H100-80GB-HBM3-SHARED", ZONE: "a"}
    assert layout.decode.node_selector == {GFD_PRODUCT_LABEL: "NVIDIA-A100-SXM4-80GB", ZONE: "a"}


def test_a_roles_own_node_selector_and_tolerations_replace_the_pools() -> None:
    own_taint = {"key": "gpu-class", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}
    layout = resolved(
        spec(
            {
                "type": "H100-80GB",
                "nodeSelector": {ZONE: "a"},
                "tolerations": [GPU_TAINT],
                "decode": {
                    "type": "A100-80GB",
                    "nodeSelector": {GFD_PRODUCT_LABEL: "A100-SXM4-80GB"},
                    "tolerations": [own_taint],
                },
            }
        )
    )
    assert layout.decode.node_selector == {GFD_PRODUCT_LABEL: "A100-SXM4-80GB"}  # the user's value wins
    assert [t.to_wire() for t in layout.decode.tolerations] == [own_taint]


def test_no_gpu_selector_with_the_label_turned_off_or_for_simulated_engines() -> None:
    pool = spec({"type": "H100-80GB", "nodeSelector": {ZONE: "a"}})
    assert resolved(pool, gpu_label="").decode.node_selector == {ZONE: "a"}
    assert resolved(spec({"type": "H100-80GB"}, engine="simulator")).decode.node_selector == {}


def test_the_operator_renders_its_gpu_label_setting_on_the_engine_pods() -> None:
    document = yaml.safe_load((EXAMPLES / "llama-3.1-70b-h100.yaml").read_text())
    document["metadata"].update(namespace="serving", uid="uid-1", generation=1)
    for label, expected in ((GFD_PRODUCT_LABEL, "NVIDIA-H100-80GB-HBM3"), ("example.com/gpu", None)):
        decision = decide(document, Capabilities(), Images(), catalog_planner(), label)
        assert decision.objects is not None, decision.problem
        decode = next(o for o in decision.objects if o["metadata"]["name"] == "llama-70b-decode")
        selector = decode["spec"]["template"]["spec"]["nodeSelector"]
        assert selector.get(GFD_PRODUCT_LABEL) == expected
        assert ("example.com/gpu" in selector) is (expected is None)


def test_every_catalog_gpu_maps_to_a_product_label_value_its_own_name_resolves() -> None:
    """GFD's value is NVML's device name with dashes for spaces (NVIDIA/k8s-device-plugin
    internal/lm/resource.go, productLabel); a pool may name the GPU by that value too."""
    catalog = load_catalog()
    label_value = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
    for name, gpu in catalog.gpus.items():
        product = gfd_product(gpu.device_name)
        assert label_value.match(product), product
        assert catalog.gpu(product).name == name
    assert gfd_product("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"


def test_the_gpu_label_setting_comes_from_the_environment_and_may_be_turned_off() -> None:
    assert settings_from_env({}).gpu_product_label == GFD_PRODUCT_LABEL
    assert settings_from_env({"TANDEM_GPU_PRODUCT_LABEL": ""}).gpu_product_label == ""
    custom = settings_from_env({"TANDEM_GPU_PRODUCT_LABEL": "example.com/gpu.product"})
    assert custom.gpu_product_label == "example.com/gpu.product"
    with pytest.raises(SettingsError, match="TANDEM_GPU_PRODUCT_LABEL"):
        settings_from_env({"TANDEM_GPU_PRODUCT_LABEL": "not a label"})
