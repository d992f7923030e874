"""What a reconcile does to the children: applies in dependency waves, repairs, prunes. Pure."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tandem.operator.drift import stamp
from tandem.operator.sync_plan import ChildKey, SyncPlan, plan_sync

Body = dict[str, Any]
OWNER = "pool-uid"
API_VERSIONS = {
    "Deployment": "apps/v1",
    "LeaderWorkerSet": "leaderworkerset.x-k8s.io/v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
}


def desired(kind: str, name: str, **spec: Any) -> Body:
    """A stamped child of the pool, as the builders render it."""
    return stamp(
        {
            "apiVersion": API_VERSIONS.get(kind, "v1"),
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": "ns",
                "labels": {"tandem.dev/pool": "p"},
                "ownerReferences": [{"kind": "InferencePool", "uid": OWNER, "controller": True}],
            },
            "spec": {"replicas": 1, **spec},
        }
    )


def live(manifest: Body, **edits: Any) -> Body:
    """``manifest`` as the API server holds it (server fields added), with ``spec`` edits."""
    body = copy.deepcopy(manifest)
    body["metadata"].update(uid=f"uid-{body['metadata']['name']}", resourceVersion="7")
    body["spec"].update(edits)
    body["status"] = {"replicas": 1}
    return body


def by_key(*bodies: Body) -> dict[ChildKey, Body]:
    return {(body["kind"], body["metadata"]["name"]): body for body in bodies}


def summary(plan: SyncPlan) -> tuple[list[list[str]], list[str]]:
    waves = [[f"{item.change.value} {'/'.join(item.child)}" for item in wave] for wave in plan.waves]
    return waves, [f"{body['kind']}/{body['metadata']['name']}" for body in plan.prune]


CONFIG = desired("ConfigMap", "p-config")
SERVICE = desired("Service", "p-decode")
ROLE = desired("Role", "p-router")
BINDING = desired("RoleBinding", "p-router")
DECODE = desired("Deployment", "p-decode")
PREFILL = desired("LeaderWorkerSet", "p-prefill")
OLD = desired("ConfigMap", "p-old")  # rendered once, no longer desired


def not_controlled_by_the_pool(body: Body) -> Body:
    body = copy.deepcopy(body)
    body["metadata"]["ownerReferences"] = [{"kind": "InferencePool", "uid": OWNER}]
    return body


@pytest.mark.parametrize(
    ("live_children", "applied", "waves", "pruned"),
    [
        pytest.param(
            {},
            set(),
            [
                ["created ConfigMap/p-config", "created Role/p-router", "created Service/p-decode"],
                ["created RoleBinding/p-router"],
                ["created Deployment/p-decode", "created LeaderWorkerSet/p-prefill"],
            ],
            [],
            id="a fresh pool: what others refer to first, the binding after its Role, workloads last",
        ),
        pytest.param(
            by_key(*(live(m) for m in (CONFIG, SERVICE, ROLE, BINDING, DECODE, PREFILL))),
            set(),
            [],
            [],
            id="everything as desired, server fields added: nothing",
        ),
        pytest.param(
            by_key(*(live(m) for m in (CONFIG, ROLE, BINDING, DECODE, PREFILL))),
            {("Service", "p-decode")},
            [["restored Service/p-decode"]],
            [],
            id="a child this process applied is gone: deleted by someone, restored",
        ),
        pytest.param(
            by_key(*(live(m) for m in (CONFIG, ROLE, BINDING, DECODE, PREFILL))),
            set(),
            [["created Service/p-decode"]],
            [],
            id="a child never applied is missing: created",
        ),
        pytest.param(
            by_key(*(live(m) for m in (CONFIG, SERVICE, ROLE, BINDING, PREFILL)), live(DECODE, replicas=3)),
            set(),
            [["restored Deployment/p-decode"]],
            [],
            id="a field the operator sets edited by hand: restored",
        ),
        pytest.param(
            by_key(
                *(live(m) for m in (SERVICE, ROLE, BINDING, PREFILL)),
                live(desired("ConfigMap", "p-config", replicas=2)),
                live(desired("Deployment", "p-decode", replicas=2)),
            ),
            set(),
            [["updated ConfigMap/p-config"], ["updated Deployment/p-decode"]],
            [],
            id="what the operator wants changed: updated, in their waves",
        ),
        pytest.param(
            by_key(*(live(m) for m in (CONFIG, SERVICE, ROLE, BINDING, DECODE, PREFILL, OLD))),
            set(),
            [],
            ["ConfigMap/p-old"],
            id="a child of the pool no longer desired: pruned",
        ),
        pytest.param(
            by_key(
                *(live(m) for m in (CONFIG, SERVICE, ROLE, BINDING, DECODE, PREFILL)),
                not_controlled_by_the_pool(live(OLD)),
            ),
            set(),
            [],
            [],
            id="a labelled object the pool does not control: left alone",
        ),
    ],
)
def test_plan_sync(
    live_children: dict[ChildKey, Body], applied: set[ChildKey], waves: list[list[str]], pruned: list[str]
) -> None:
    manifests = [CONFIG, ROLE, BINDING, SERVICE, DECODE, PREFILL]
    plan = plan_sync(live_children, manifests, applied=applied, owner=OWNER)
    assert summary(plan) == (waves, pruned)
    assert plan.desired == {(m["kind"], m["metadata"]["name"]) for m in manifests}


def test_a_child_owned_by_an_earlier_pool_of_the_name_is_not_pruned() -> None:
    """A pool deleted and created again under its name has a new uid: the garbage collector
    removes the old pool's children, the new pool's reconcile does not."""
    plan = plan_sync(by_key(live(OLD)), [], applied=set(), owner="the-new-uid")
    assert plan.prune == ()


def test_planning_leaves_its_inputs_as_they_were() -> None:
    children = by_key(live(CONFIG), live(OLD))
    before = copy.deepcopy(children)
    plan_sync(children, [CONFIG, DECODE], applied={("Deployment", "p-decode")}, owner=OWNER)
    assert children == before


def shared_by(body: Body, *uids: str) -> Body:
    """``body`` as a shared router's object (spec.router.shared), owned by each of ``uids``."""
    body = copy.deepcopy(body)
    body["metadata"]["labels"] = {"tandem.dev/router": "chat"}
    body["metadata"]["ownerReferences"] = [{"kind": "InferencePool", "uid": uid} for uid in uids]
    return body


def test_a_shared_routers_object_is_pruned_by_its_last_owner_only() -> None:
    alone, together = shared_by(live(OLD), OWNER), shared_by(live(OLD), "other-pool", OWNER)
    assert plan_sync(by_key(alone), [], applied=set(), owner=OWNER).prune == (alone,)
    assert plan_sync(by_key(together), [], applied=set(), owner=OWNER).prune == ()
