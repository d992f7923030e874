"""Generate the InferencePool CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema: no $ref,
no anyOf-with-null (nullable or absent instead), boolean exclusive bounds, int-or-string marked
with x-kubernetes-int-or-string, free-form maps via additionalProperties.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from tandem.api.resource import GROUP, KIND, PLURAL, SHORT_NAMES, SINGULAR, VERSION
from tandem.api.spec import InferencePoolSpec
from tandem.api.status import InferencePoolStatus

Schema = dict[str, Any]

# Keys of JSON Schema that OpenAPI v3.0 structural schemas accept as they are.
_KEPT = {
    "type", "description", "enum", "minimum", "maximum", "minLength", "maxLength", "pattern",
    "minItems", "maxItems", "format", "default", "required",
}  # fmt: skip


def openapi_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of a model, as used inside a CRD."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _convert(raw, raw.get("$defs", {}))


def _resolve(node: Schema, defs: Schema) -> Schema:
    while "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _convert(node: Schema, defs: Schema) -> Schema:
    node = _resolve(node, defs)
    variants = node.get("anyOf") or node.get("oneOf")
    if variants:
        return _convert_union(node, variants, defs)
    out: Schema = {k: v for k, v in node.items() if k in _KEPT}
    if "const" in node:
        out["enum"] = [node["const"]]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node:
            out[limit], out[bound] = node[bound], True
    if node.get("type") == "object":
        if "properties" in node:
            out["properties"] = {name: _convert(sub, defs) for name, sub in node["properties"].items()}
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and extra:
            out["additionalProperties"] = _convert(extra, defs)
        elif "properties" not in node:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if node.get("type") == "array" and "prefixItems" in node:
        # A fixed-length tuple of one type (structural schemas have no per-position items).
        kinds = [_convert(item, defs) for item in node["prefixItems"]]
        if any(kind != kinds[0] for kind in kinds):
            raise ValueError(f"a tuple of mixed types has no structural schema: {node['prefixItems']}")
        out["items"] = kinds[0]
        out["minItems"] = out["maxItems"] = len(kinds)
    elif node.get("type") == "array":
        out["items"] = _convert(node["items"], defs)
    return out


def _convert_union(node: Schema, variants: list[Schema], defs: Schema) -> Schema:
    concrete = [_resolve(v, defs) for v in variants if v.get("type") != "null"]
    outer = {k: v for k, v in node.items() if k in ("description", "default") and v is not None}
    if len(concrete) == 1:
        return {**_convert(concrete[0], defs), **outer}
    kinds = {v.get("type") for v in concrete}
    if kinds == {"integer", "string"}:
        # int-or-string: the string side is an enum of keywords (e.g. "auto").
        words = [w for v in concrete for w in v.get("enum", [v.get("const")]) if w is not None]
        description = outer.get("description", "")
        hint = f" Integer or one of: {', '.join(map(str, words))}." if words else ""
        return {
            "x-kubernetes-int-or-string": True,
            "description": (description + hint).strip(),
            **({"default": outer["default"]} if "default" in outer else {}),
        }
    raise ValueError(f"cannot express union of {sorted(map(str, kinds))} as a structural schema")


def _without_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def custom_resource_definition() -> Schema:
    """The CRD manifest for inferencepools.tandem.dev."""
    spec = openapi_schema(InferencePoolSpec)
    # Only the operator writes status, always whole; server-side defaults there would only add
    # noise (and Kubernetes 1.20 rejects some, e.g. an empty-string default).
    status = _without_defaults(openapi_schema(InferencePoolStatus))
    ready = '.status.conditions[?(@.type=="Ready")].status'
    observed_rps = ".status.autoscaling.observed.requestsPerSecond"  # with spec.autoscaling.mode Planner
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["tandem"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
                        {"name": "Accelerator", "type": "string", "jsonPath": ".spec.accelerator.type"},
                        {"name": "Prefill", "type": "string", "jsonPath": ".status.prefill.ready"},
                        {"name": "Decode", "type": "string", "jsonPath": ".status.decode.ready"},
                        {"name": "RPS", "type": "number", "jsonPath": observed_rps},
                        {"name": "Ready", "type": "string", "jsonPath": ready},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A model served by disaggregated prefill and decode vLLM roles.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }
