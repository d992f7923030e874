"""The operator's rendered children, pinned as golden YAML (tests/golden/operator/).

A deliberate change to what the operator renders regenerates them: TANDEM_UPDATE_GOLDEN=1 pytest
tests/test_operator_builders_golden.py, then review the diff.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from operator_cases import OLD_CLUSTER, WITH_LWS, example_spec, layout, pool, render

from tandem.operator.build import Manifest, desired_objects
from tandem.operator.rbac import rbac_manifests
from tandem.operator.settings import Images
from tandem.operator.yamldump import dump_all

GOLDEN = Path(__file__).resolve().parent / "golden" / "operator"
UPDATE = os.environ.get("TANDEM_UPDATE_GOLDEN") == "1"


def _vllm_lmcache() -> list[Manifest]:
    spec = example_spec("llama-3.1-8b-h100.yaml")
    return render(spec, layout(spec, tp=2, prefill=2, decode=3), ref=pool("llama-8b"))


def _vllm_nixl_pvc() -> list[Manifest]:
    spec = example_spec(
        "llama-3.1-70b-h100.yaml", disaggregation={"kvTransfer": {"connector": "nixl"}, "mode": "Always"}
    )
    return render(spec, layout(spec, tp=4, prefill=2, decode=1), ref=pool("llama-70b"))


def _simulator() -> list[Manifest]:
    spec = example_spec("simulator-pool.yaml")
    return render(spec, layout(spec, tp=1, prefill=1, decode=2), ref=pool("sim-llama"))


def _vllm_multi_node() -> list[Manifest]:
    spec = example_spec("llama-3.1-70b-h100.yaml", decode={"tensorParallel": 8, "pipelineParallel": 2})
    return render(spec, layout(spec, tp=8, pp=2, prefill=1, decode=1), WITH_LWS, pool("llama-405b"))


CASES: dict[str, Callable[[], list[Manifest]]] = {
    "vllm-lmcache-tp2": _vllm_lmcache,
    "vllm-nixl-pvc": _vllm_nixl_pvc,
    "simulator-lmcache": _simulator,
    "vllm-multi-node-lws": _vllm_multi_node,
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
