"""The CRD is generated from the pydantic models and stays in sync with crds/."""

from __future__ import annotations

import json
from typing import Any

import yaml
from paths import REPO

from tandem.api.cli import render_crds
from tandem.api.crd import custom_resource_definition

ROOT = REPO
COMMITTED = ROOT / "crds" / "tandem.dev_inferencepools.yaml"


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(node, dict):
        return []
    found = [(path, node)]
    for key, value in node.get("properties", {}).items():
        found += walk(value, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        found += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += walk(node["additionalProperties"], f"{path}{{}}")
    return found


def schema() -> dict[str, Any]:
    crd = custom_resource_definition()
    result: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return result


def test_committed_crd_matches_the_models() -> None:
    assert COMMITTED.read_text() == render_crds(), "crds/ is stale: run `make crds`"


def test_schema_is_structural() -> None:
    for path, node in walk(schema()):
        if path == ".metadata":  # the apiserver owns ObjectMeta's schema
            continue
        assert "$ref" not in node and "anyOf" not in node and "oneOf" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        if node.get("type") == "object":
            assert (
                "properties" in node
                or "additionalProperties" in node
                or node.get("x-kubernetes-preserve-unknown-fields")
            ), path


def test_schema_uses_camel_case_and_carries_constraints() -> None:
    spec = schema()["properties"]["spec"]
    assert spec["required"] == ["model", "accelerator"]
    assert spec["properties"]["model"]["required"] == ["name"]
    slo = spec["properties"]["slo"]["properties"]
    assert slo["ttftMs"] == {
        "default": 2000,
        "description": "Time to first token target, milliseconds.",
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
    }
    mode = spec["properties"]["disaggregation"]["properties"]["mode"]
    assert mode["enum"] == ["Auto", "Always", "Never"]
    threshold = spec["properties"]["disaggregation"]["properties"]["promptTokensThreshold"]
    assert threshold["x-kubernetes-int-or-string"] is True
    assert spec["properties"]["prefill"]["properties"]["replicas"]["minimum"] == 0


def test_crd_names_status_subresource_and_columns() -> None:
    crd = custom_resource_definition()
    assert crd["metadata"]["name"] == "inferencepools.tandem.dev"
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["tpool"]  # not `infpool`: the Gateway API's InferencePool has it
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Model", "Accelerator", "Prefill", "Decode", "RPS", "Ready", "Age"]


def test_rendered_yaml_is_plain() -> None:
    text = render_crds()
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text) == json.loads(json.dumps(custom_resource_definition()))
