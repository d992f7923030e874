"""The Gateway API Inference Extension (GIE) InferencePool a pool may own, and its GatewayAccepted
condition: when it is rendered, what it selects, how the Gateways' verdicts read, and how CRD events
change what the cluster is taken to serve. Offline; tests/operator/test_gateway_api_on_cluster.py
puts the same objects to a real API server."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from operator_cases import GATEWAY_API, OLD_CLUSTER, WITH_GIE, example_spec, layout, pool, render
from paths import REPO, TESTS

from tandem.api import ConditionType, InferencePool
from tandem.operator.build.gateway import GIE_KIND
from tandem.operator.capabilities import (
    DISCOVERED_GROUPS,
    GIE_VERSIONS,
    Capabilities,
    CrdChange,
    capabilities_from,
    crd_change,
    still_listed,
)
from tandem.operator.decide import decide
from tandem.operator.gateway_api import (
    ACCEPTED,
    CRD_NOT_INSTALLED,
    MAX_MESSAGE,
    NO_GATEWAY,
    NOT_ACCEPTED,
    NOT_REQUESTED,
    PENDING,
    Exposed,
    gateway_conditions,
    gateway_plan,
    reflected,
)
from tandem.operator.kinds import kind_of, served_kinds
from tandem.operator.naming import LLMD_ROLE_LABEL
from tandem.operator.planning import catalog_planner
from tandem.operator.settings import Images
from tandem.operator.status import Problem, Reported, pool_status

GIE = GIE_VERSIONS[0]
WITH_BOTH = Capabilities(
    pdb_api_version="policy/v1", lws_api_version="leaderworkerset.x-k8s.io/v1", gie_api_version=GIE
)
TEST_CRD = TESTS / "crds" / "inference.networking.k8s.io_inferencepools.yaml"
# llm-d's role filters (llm-d-inference-scheduler pkg/plugins/filter/pd_role.go, by_label.go): the
# values each accepts, and whether it accepts a pod without the label.
LLMD_DECODE_FILTER = ({"decode", "prefill-decode", "both"}, True)
LLMD_PREFILL_FILTER = ({"prefill", "prefill-decode", "both"}, False)


def _gie(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["apiVersion"] == GIE]


def _templates(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Pod template labels of every workload, by workload name (LeaderWorkerSets: leader, worker)."""
    found = {}
    for o in objects:
        if o["kind"] == "Deployment":
            found[o["metadata"]["name"]] = o["spec"]["template"]["metadata"]["labels"]
        if o["kind"] == "LeaderWorkerSet":
            group = o["spec"]["leaderWorkerTemplate"]
            found[o["metadata"]["name"] + "/leader"] = group["leaderTemplate"]["metadata"]["labels"]
            found[o["metadata"]["name"] + "/worker"] = group["workerTemplate"]["metadata"]["labels"]
    return found


def _passes(labels: dict[str, str], accepted: tuple[set[str], bool]) -> bool:
    values, allows_no_label = accepted
    return labels[LLMD_ROLE_LABEL] in values if LLMD_ROLE_LABEL in labels else allows_no_label


@pytest.mark.parametrize(
    ("gateway", "caps", "rendered"),
    [(GATEWAY_API, WITH_GIE, 1), (GATEWAY_API, OLD_CLUSTER, 0), (None, WITH_GIE, 0), (None, OLD_CLUSTER, 0)],
)
def test_rendered_only_where_asked_for_and_served(gateway: Any, caps: Capabilities, rendered: int) -> None:
    spec = example_spec("llama-3.1-8b-h100.yaml", **({"gatewayAPI": gateway} if gateway else {}))
    assert len(_gie(render(spec, layout(spec), caps))) == rendered


def test_selects_the_decode_leaders_that_llmd_decode_filter_accepts_and_nothing_else() -> None:
    """A Gateway sends whole requests to what the pool selects: decode engines serve them (they
    prefill locally); prefillers, routers and multi-node workers must not be selected."""
    spec = example_spec(
        "llama-3.1-70b-h100.yaml",
        decode={"tensorParallel": 8, "pipelineParallel": 2},
        disaggregation={"kvTransfer": {"connector": "nixl"}},
        gatewayAPI=GATEWAY_API,
    )
    objects = render(spec, layout(spec, tp=8, pp=2, prefill=1, decode=2), WITH_BOTH, pool("llama-405b"))
    [gie] = _gie(objects)
    selector = gie["spec"]["selector"]["matchLabels"]
    templates = _templates(objects)
    selected = {name for name, labels in templates.items() if selector.items() <= labels.items()}
    assert selected == {"llama-405b-decode/leader"}
    assert templates["llama-405b-decode/leader"][LLMD_ROLE_LABEL] == "decode"
    # What llm-d's filters make of the selected pods: decode profile yes, prefill profile no.
    assert all(_passes(templates[name], LLMD_DECODE_FILTER) for name in selected)
    assert not any(_passes(templates[name], LLMD_PREFILL_FILTER) for name in selected)
    # The decode Service selects the same pods (what the router reaches).
    [service] = [
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "llama-405b-decode"
    ]
    assert service["spec"]["selector"] == selector


def test_object_satisfies_the_v1_schema_and_the_rules_upstream_states_in_cel() -> None:
    """The test CRD (Kubernetes 1.20 has no CEL) leaves out two v1 rules; the builder keeps both,
    and the limits of the first v1 releases too (one target port, an endpointPickerRef)."""
    spec = example_spec("llama-3.1-8b-h100.yaml", gatewayAPI=GATEWAY_API)
    [gie] = _gie(render(spec, layout(spec), WITH_GIE, pool("llama-8b")))
    ports = [p["number"] for p in gie["spec"]["targetPorts"]]
    assert len(ports) == 1 == len(set(ports))  # unique; and one, as the first v1 releases require
    ref = gie["spec"]["endpointPickerRef"]
    assert ref["kind"] == "Service" and ref["port"] == {"number": 9002}  # port is set for a Service
    assert ref["failureMode"] in ("FailOpen", "FailClose")
    crd = yaml.safe_load(TEST_CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(gie["spec"]) <= set(schema["properties"]) and set(schema["required"]) <= set(gie["spec"])
    assert set(ref) <= set(schema["properties"]["endpointPickerRef"]["properties"])
    assert (crd["spec"]["group"], crd["spec"]["names"]["kind"]) == (GIE.split("/")[0], GIE_KIND)
    assert gie["metadata"]["ownerReferences"][0]["kind"] == InferencePool.model_fields["kind"].default
    assert kind_of(gie).plural == crd["spec"]["names"]["plural"]


def test_the_gie_kind_is_watched_listed_and_pruned_only_where_served() -> None:
    assert "inference.networking.k8s.io" in DISCOVERED_GROUPS
    assert [k for k in served_kinds(WITH_GIE) if k.kind == GIE_KIND] == [
        kind_of({"apiVersion": GIE, "kind": GIE_KIND})
    ]
    assert not [k for k in served_kinds(OLD_CLUSTER) if k.kind == GIE_KIND]


# -- capabilities from discovery and CRD events ---------------------------------------------------

GIE_CRD = yaml.safe_load(TEST_CRD.read_text())


def _crd(established: bool = True, deleting: bool = False) -> dict[str, Any]:
    crd = copy.deepcopy(GIE_CRD)
    crd["status"] = {"conditions": [{"type": "Established", "status": "True" if established else "False"}]}
    if deleting:
        crd["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return crd


def test_crd_events_say_what_to_await_and_what_is_gone_before_discovery_does() -> None:
    assert capabilities_from(["policy/v1", GIE]).gie_api_version == GIE
    assert capabilities_from(["policy/v1", GIE], withdrawn=(GIE,)).gie_api_version is None
    assert crd_change("MODIFIED", _crd()) == CrdChange(established=(GIE,))
    assert crd_change("ADDED", _crd(established=False)) == CrdChange(withdrawn=(GIE,))  # listed, not routed
    assert crd_change("MODIFIED", _crd(deleting=True)) == CrdChange(withdrawn=(GIE,))
    assert crd_change("DELETED", _crd()) == CrdChange(withdrawn=(GIE,))
    other = {"spec": {"group": "example.com", "versions": [{"name": "v1"}]}}
    assert crd_change(None, other) is None


def test_discovery_takes_away_what_it_stops_listing_and_adds_nothing() -> None:
    """What a 404 for a kind no longer served is checked against (Reconciler._withdrawn)."""
    caps = capabilities_from(["policy/v1", GIE])
    assert caps.versions == {"policy/v1", GIE}
    assert still_listed(caps, ["policy/v1"]) == capabilities_from(["policy/v1"])
    assert still_listed(caps, ["policy/v1", GIE, "leaderworkerset.x-k8s.io/v1"]) == caps  # no new CRD


# -- the GatewayAccepted condition -----------------------------------------------------------------


def _plan(gateway: Any, caps: Capabilities) -> Any:
    spec = example_spec("llama-3.1-8b-h100.yaml", **({"gatewayAPI": gateway} if gateway else {}))
    return gateway_plan(spec, caps, render(spec, layout(spec), caps, pool("llama-8b")))


def test_the_condition_says_what_is_missing_or_which_gie_pool_to_read() -> None:
    assert _plan(GATEWAY_API, WITH_GIE) == Exposed("llama-8b")
    asked = _plan(GATEWAY_API, OLD_CLUSTER)
    assert (asked.status, asked.reason) == ("False", CRD_NOT_INSTALLED) and "spec.gatewayAPI" in asked.message
    offered = _plan(None, WITH_GIE)
    assert (offered.status, offered.reason) == ("False", NOT_REQUESTED)
    assert "spec.gatewayAPI.endpointPicker" in offered.message
    assert _plan(None, OLD_CLUSTER) is None
    assert gateway_conditions(None, {}) == ()


def test_decide_renders_the_gie_pool_and_plans_its_condition() -> None:
    body = yaml.safe_load((REPO / "examples" / "simulator-pool.yaml").read_text())
    body["metadata"].update(namespace="serving", uid="uid-1", generation=2)
    body["spec"]["gatewayAPI"] = GATEWAY_API
    decision = decide(body, WITH_GIE, Images(), catalog_planner())
    assert decision.objects is not None and decision.gateway == Exposed("sim-llama")
    assert [o["metadata"]["name"] for o in _gie(decision.objects)] == ["sim-llama"]


def _gie_pool(*parents: dict[str, Any], generation: int = 2) -> dict[str, Any]:
    return {"metadata": {"name": "llama-8b", "generation": generation}, "status": {"parents": list(parents)}}


def _parent(
    name: str, *conditions: tuple[str, str, str], namespace: str | None = None, seen: int = 2
) -> dict[str, Any]:
    ref = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "parentRef": ref,
        "conditions": [
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": f"{kind} {reason}",
                "observedGeneration": seen,
            }
            for kind, status, reason in conditions
        ],
    }


OK = (("Accepted", "True", "Accepted"), ("ResolvedRefs", "True", "ResolvedRefs"))


@pytest.mark.parametrize(
    ("live", "expected"),
    [
        (None, ("Unknown", PENDING)),
        (_gie_pool(), ("False", NO_GATEWAY)),
        (_gie_pool(_parent("gw", *OK)), ("True", ACCEPTED)),
        (
            _gie_pool(
                _parent(
                    "gw", ("Accepted", "True", "Accepted"), ("ResolvedRefs", "False", "InvalidExtensionRef")
                )
            ),
            ("False", "InvalidExtensionRef"),
        ),
        (
            _gie_pool(_parent("gw", ("Accepted", "False", "NotSupportedByParent"))),
            ("False", "NotSupportedByParent"),
        ),
        (_gie_pool(_parent("gw", ("Accepted", "Unknown", "Pending"))), ("Unknown", PENDING)),
        (
            _gie_pool(_parent("gw", ("ResolvedRefs", "True", "ResolvedRefs"))),
            ("Unknown", PENDING),
        ),  # no verdict
        (_gie_pool(_parent("gw", *OK, seen=1)), ("Unknown", PENDING)),  # judged the previous generation
        # One Gateway accepting is enough; a refusing one stays in the message.
        (
            _gie_pool(_parent("a", ("Accepted", "False", "HTTPRouteNotAccepted")), _parent("b", *OK)),
            ("True", ACCEPTED),
        ),
    ],
)
def test_gateway_verdicts_sum_up_in_one_condition(live: Any, expected: tuple[str, str]) -> None:
    condition = reflected("llama-8b", live)
    assert condition.type == ConditionType.GATEWAY_ACCEPTED
    assert (condition.status, condition.reason) == expected


def test_the_message_names_every_gateway_and_what_each_said() -> None:
    live = _gie_pool(
        _parent("a", ("Accepted", "False", "HTTPRouteNotAccepted"), namespace="infra"), _parent("b", *OK)
    )
    message = reflected("llama-8b", live).message
    assert message.startswith("InferencePool.inference.networking.k8s.io/llama-8b accepted by Gateway b")
    assert "Gateway infra/a: Accepted HTTPRouteNotAccepted" in message
    alone = reflected("llama-8b", _gie_pool()).message
    assert "backendRefs" in alone and "kind InferencePool, name llama-8b" in alone


@pytest.mark.parametrize(
    "status",
    [
        {"parents": "everything"},
        {"parents": [{"parentRef": "gw", "conditions": {"Accepted": True}}]},
        {"parents": [{"conditions": [{"type": "Accepted", "status": "False", "reason": "no such reason!"}]}]},
        {"parents": [{"conditions": [{"type": "Accepted", "status": "False", "message": "x" * 100_000}]}]},
        {"parents": [{"conditions": [{"type": "Accepted", "status": "False", "message": "x" * 999}]}] * 32},
    ],
)
def test_whatever_a_gateway_writes_makes_a_valid_condition(status: dict[str, Any]) -> None:
    """Status is written by others, and a GIE CRD looser than upstream's lets anything through; the
    condition must still pass Tandem's Condition schema (pydantic refusing it would fail every
    reconcile of the pool) and stay short."""
    condition = reflected("llama-8b", {"metadata": {"generation": 1}, "status": status})
    assert condition.reason in (NO_GATEWAY, NOT_ACCEPTED, PENDING)
    assert len(condition.message) <= MAX_MESSAGE
    [written] = [c for c in _status((condition,)).conditions if c.type == ConditionType.GATEWAY_ACCEPTED]
    assert (written.status, written.reason) == (condition.status, condition.reason)


def _status(reported: tuple[Reported, ...], previous: Any = None, now: str = "2026-01-01T00:00:00Z") -> Any:
    return pool_status(
        generation=1,
        plan=None,
        desired=None,
        observed={},
        problem=Problem("InvalidSpec", "spec.model.name: unknown"),
        endpoint=None,
        previous=previous,
        now=now,
        reported=reported,
    )


def test_the_condition_keeps_its_transition_time_until_its_status_changes() -> None:
    pending = reflected("llama-8b", None)
    first = _status((pending,))
    again = _status(
        (reflected("llama-8b", _gie_pool(_parent("gw", ("Accepted", "Unknown", "Pending")))),),
        first,
        "2026-01-01T00:05:00Z",
    )
    accepted = _status((reflected("llama-8b", _gie_pool(_parent("gw", *OK))),), again, "2026-01-01T00:09:00Z")

    def when(status: Any) -> str:
        return next(
            c.last_transition_time for c in status.conditions if c.type == ConditionType.GATEWAY_ACCEPTED
        )

    assert when(first) == when(again) == "2026-01-01T00:00:00Z"
    assert when(accepted) == "2026-01-01T00:09:00Z"
    assert [c.type for c in accepted.conditions][-1] == ConditionType.GATEWAY_ACCEPTED
    assert not [c for c in _status(()).conditions if c.type == ConditionType.GATEWAY_ACCEPTED]
