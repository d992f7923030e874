"""The Gateway API Inference Extension (GIE) InferencePool on the devcluster: a real API server holds
it to the test CRD's structural schema (tests/crds/), the real garbage collector removes it with its
pool, and the operator runs as its own ServiceAccount, held to the RBAC it generates (reading, writing
and pruning GIE pools and watching CRDs must be in its ClusterRole).

vLLM pools: their pods cannot run here (no GPUs), but they exist, with their labels, which is what a
GIE pool selects. The CRD is installed while the operator runs, as a platform team would, and
removed while it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kubernetes.client
import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from operator_cluster import OperatorThread, PoolApi, example
from paths import TESTS

from tandem.devcluster.testing import crd_established, delete_crd, wait_for

pytestmark = pytest.mark.cluster

CRD = yaml.safe_load((TESTS / "crds" / "inference.networking.k8s.io_inferencepools.yaml").read_text())
GROUP, VERSION, PLURAL = CRD["spec"]["group"], "v1", CRD["spec"]["names"]["plural"]
EPP = {"endpointPicker": {"name": "llama-epp"}}  # port and failureMode take their defaults


@contextmanager
def gie_crd_installed(kube_api: kubernetes.client.ApiClient) -> Iterator[None]:
    """The test CRD, Established; removed (and gone) afterwards, whatever the test did with it."""
    name = CRD["metadata"]["name"]
    kubernetes.client.ApiextensionsV1Api(kube_api).create_custom_resource_definition(CRD)
    wait_for(lambda: crd_established(kube_api, name), timeout=30, message=f"CRD {name} Established")
    try:
        yield
    finally:
        delete_crd(kube_api, name)


class GiePools:
    def __init__(self, pools: PoolApi) -> None:
        self.objects, self.namespace = pools.objects, pools.namespace

    def get(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.objects.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )
        return found

    def absent(self, name: str) -> bool:
        try:
            self.get(name)
        except ApiException as exc:
            return exc.status == 404
        return False

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.objects.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return created


def gateway_condition(pools: PoolApi, name: str) -> tuple[str, str] | None:
    condition = pools.condition(name, "GatewayAccepted")
    return (condition["status"], condition["reason"]) if condition else None


def invalid(name: str, **spec: Any) -> dict[str, Any]:
    """A GIE pool valid but for ``spec``'s fields."""
    base = {
        "selector": {"matchLabels": {"app": "x"}},
        "targetPorts": [{"number": 8000}],
        "endpointPickerRef": {"name": "epp", "port": {"number": 9002}},
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferencePool",
        "metadata": {"name": name},
        "spec": {**base, **spec},
    }


def test_gie_pool_appears_is_held_to_the_schema_reflects_gateways_and_goes_with_the_pool(
    pools: PoolApi, rbac_operator: OperatorThread, kube_api: kubernetes.client.ApiClient
) -> None:
    name = "llama-8b"
    uid = pools.create(example("llama-3.1-8b-h100.yaml", gatewayAPI=EPP))["metadata"]["uid"]
    wait_for(
        lambda: gateway_condition(pools, name) == ("False", "CRDNotInstalled"),
        message="GatewayAccepted=False CRDNotInstalled before the CRD exists",
    )
    gie = GiePools(pools)
    with gie_crd_installed(kube_api):
        live = wait_for(lambda: gie.get(name), timeout=60, message="GIE InferencePool created after its CRD")
        [owner] = live["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "InferencePool",
            name,
            uid,
            True,
        )
        spec = live["spec"]
        selector = spec["selector"]["matchLabels"]
        assert selector == {"tandem.dev/pool": name, "tandem.dev/role": "decode"}
        assert spec["targetPorts"] == [{"number": 8000}]
        # Defaults the API server filled in from the schema: the object went through it.
        assert spec["endpointPickerRef"] == {
            "kind": "Service",
            "name": "llama-epp",
            "port": {"number": 9002},
            "failureMode": "FailClose",
        }
        assert spec["appProtocol"] == "http"

        decode = pools.get(name)["status"]["plan"]["decode"]["replicas"]
        selected = wait_for(
            lambda: (
                (
                    found := pools.core.list_namespaced_pod(
                        pools.namespace, label_selector=",".join(f"{k}={v}" for k, v in selector.items())
                    ).items
                )
                and len(found) == decode
                and found
            ),
            message="the decode pods exist",
        )
        assert {pod.metadata.labels["llm-d.ai/role"] for pod in selected} == {"decode"}
        assert all(pod.metadata.owner_references[0].name.startswith(f"{name}-decode-") for pod in selected)
        wait_for(
            lambda: gateway_condition(pools, name) == ("False", "NoGateway"),
            message="GatewayAccepted=False NoGateway",
        )

        # A Gateway controller's verdict, in the status shape the schema defines.
        verdict = {
            "parents": [
                {
                    "parentRef": {"name": "inference-gateway", "namespace": "infra"},
                    "controllerName": "example.net/gateway-controller",
                    "conditions": [
                        {
                            "type": "Accepted",
                            "status": "True",
                            "reason": "Accepted",
                            "message": "routes to it",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                            "observedGeneration": live["metadata"]["generation"],
                        },
                        {
                            "type": "ResolvedRefs",
                            "status": "True",
                            "reason": "ResolvedRefs",
                            "message": "llama-epp:9002",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        },
                    ],
                }
            ]
        }
        pools.objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, pools.namespace, PLURAL, name, {"status": verdict}
        )
        # As long as the pool's own creation above (60 s): the operator sees the GIE pool's status
        # through kopf's watch of that kind, which starts once kopf has observed the new CRD.
        wait_for(
            lambda: gateway_condition(pools, name) == ("True", "Accepted"),
            timeout=60,
            message="GatewayAccepted=True",
        )
        assert "Gateway infra/inference-gateway" in pools.condition(name, "GatewayAccepted")["message"]
        assert pools.condition(name, "Ready")["reason"] not in ("ApplyFailed", "ApplyRetrying")

        # Drift: a selector changed by hand is put back.
        pools.objects.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            pools.namespace,
            PLURAL,
            name,
            {"spec": {"selector": {"matchLabels": {"tandem.dev/role": "prefill"}}}},
        )
        wait_for(
            lambda: gie.get(name)["spec"]["selector"]["matchLabels"] == selector,
            message="hand-edited GIE selector restored",
        )

        # The schema is structural: wrong shapes and values are refused, not stored.
        refused = {
            "nine-ports": {"targetPorts": [{"number": 8000 + i} for i in range(9)]},
            "no-ports": {"targetPorts": []},
            "string-port": {"targetPorts": [{"number": "8000"}]},
            "port-out-of-range": {"targetPorts": [{"number": 70000}]},
            "no-labels": {"selector": {"matchLabels": {}}},
            "unknown-failure-mode": {
                "endpointPickerRef": {"name": "epp", "port": {"number": 9002}, "failureMode": "Sometimes"}
            },
        }
        for case, fields in refused.items():
            with pytest.raises(ApiException) as error:
                gie.create(invalid(case, **fields))
            assert error.value.status == 422, (case, error.value.body)
        gie.create(invalid("valid"))  # the same object without the faults is accepted

        # The real garbage collector removes it with the pool (blockOwnerDeletion, background).
        pools.delete(name)
        wait_for(lambda: gie.absent(name), timeout=120, message="GIE InferencePool garbage-collected")
    assert rbac_operator.healthy()
    assert rbac_operator.metric("tandem_operator_reconcile_errors_total") == 0


def test_gie_pool_is_pruned_when_unasked_and_its_crd_can_go_while_the_operator_runs(
    pools: PoolApi, rbac_operator: OperatorThread, kube_api: kubernetes.client.ApiClient
) -> None:
    name = "llama-8b"
    gie = GiePools(pools)
    with gie_crd_installed(kube_api):
        pools.create(example("llama-3.1-8b-h100.yaml", gatewayAPI=EPP))
        wait_for(lambda: gie.get(name), timeout=60, message="GIE InferencePool created")
        pools.objects.patch_namespaced_custom_object(
            "tandem.dev", "v1alpha1", pools.namespace, "inferencepools", name, {"spec": {"gatewayAPI": None}}
        )
        wait_for(lambda: gie.absent(name), message="GIE InferencePool pruned once spec.gatewayAPI is unset")
        wait_for(
            lambda: gateway_condition(pools, name) == ("False", "NotRequested"),
            message="GatewayAccepted=False NotRequested",
        )
        pools.patch_spec(name, {"gatewayAPI": EPP})
        wait_for(lambda: gie.get(name), message="GIE InferencePool back")

        delete_crd(kube_api, CRD["metadata"]["name"])
        wait_for(
            lambda: gateway_condition(pools, name) == ("False", "CRDNotInstalled"),
            message="GatewayAccepted=False CRDNotInstalled once the CRD is gone",
        )
    ready = pools.condition(name, "Ready")
    assert ready is not None and ready["reason"] not in ("ApplyFailed", "ApplyRetrying"), ready
    assert not [e for e in pools.events(name) if e.type == "Warning"]
    assert rbac_operator.healthy()
    assert rbac_operator.metric("tandem_operator_reconcile_errors_total") == 0
    pools.delete(name)
