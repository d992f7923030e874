"""The Gateway API Inference Extension (GIE) ``InferencePool`` over a pool's decode engines.

Not Tandem's InferencePool: ``inference.networking.k8s.io/v1``, fields as in GIE's
``api/v1/inferencepool_types.go`` (kubernetes-sigs/gateway-api-inference-extension). It carries the
pool's name, so an HTTPRoute names it as ``{group: inference.networking.k8s.io, kind:
InferencePool, name: <pool>}`` and the user's endpoint picker (EPP) as ``--pool-name <pool>``.

It selects the decode engines only, which carry ``llm-d.ai/role: decode``:

- a request a Gateway sends to an engine is served whole by that engine. A decode engine does that
  (it prefills locally). A prefill engine must not get one: llm-d's prefill → decode flow needs its
  routing sidecar on the decode pod (it reads ``x-prefiller-host-port``), which Tandem does not
  run, so the EPP could only ever send whole requests there;
- llm-d's decode filter accepts ``decode`` (and pods without the label), its prefill filter
  ``prefill`` (llm-d-inference-scheduler ``pkg/plugins/filter/pd_role.go``): with no prefill
  engines in the pool its PD profile handler falls back to the decode profile alone, and a plain
  GIE EPP, which filters on no role, and ``failureMode: FailOpen``, where the Gateway picks any
  endpoint of the pool itself, are as safe;
- the selector is the decode Service's, so leaders only: a multi-node instance's workers serve no
  HTTP and carry no role label.

One target port (the first v1 releases allow one, later ones eight) and an explicit EPP port (the v1
schema requires one for a Service) keep the object valid under every v1 schema released, including
the rules stated in CEL (unique port numbers; ``port`` set when ``kind`` is Service) and the
releases where ``endpointPickerRef`` is required (optional since v1.5.0, but most Gateways still
refuse a pool without one).
"""

from __future__ import annotations

from tandem.api import GatewayApiSpec
from tandem.operator.build.engine import HTTP_PORT
from tandem.operator.build.meta import Manifest, manifest, metadata
from tandem.operator.naming import PoolRef, Role

GIE_KIND = "InferencePool"


def gateway_inference_pool(pool: PoolRef, gateway: GatewayApiSpec, api_version: str) -> Manifest:
    picker = gateway.endpoint_picker
    return manifest(
        api_version,
        GIE_KIND,
        metadata(pool, pool.name, pool.gateway_labels()),
        spec={
            "selector": {"matchLabels": pool.engine_selector(Role.DECODE)},
            "targetPorts": [{"number": HTTP_PORT}],
            "endpointPickerRef": {
                "kind": "Service",
                "name": picker.name,
                "port": {"number": picker.port},
                "failureMode": str(picker.failure_mode),
            },
        },
    )
