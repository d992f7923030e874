"""One router for several pools (spec.router.shared): its members, what each renders, and the
controller's reconciles as pools join, conflict and leave (in-memory API)."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from operator_cases import example_spec, layout, render
from operator_cases import pool as pool_ref_of
from operator_memory_api import MemoryApi, pool_body

from tandem.api import InferencePoolSpec
from tandem.operator.build import SharedRouter
from tandem.operator.capabilities import Capabilities
from tandem.operator.controller import Controller
from tandem.operator.decide import decide, pool_ref
from tandem.operator.planning import catalog_planner
from tandem.operator.settings import Images, OperatorSettings
from tandem.operator.shared_router import SHARED_ROUTER_CONFLICT, shared_router
from tandem.operator.status import Problem

Body = dict[str, Any]
QWEN = "Qwen/Qwen2.5-7B-Instruct"


def member(name: str, model: str = "meta-llama/Llama-3.1-8B-Instruct", **router: Any) -> Body:
    """A simulator pool of ``model`` sharing router ``chat`` unless ``router`` says otherwise."""
    body = pool_body()
    body["metadata"].update(name=name, uid=f"uid-{name}")
    body["spec"]["model"] = {**body["spec"]["model"], "name": model}
    body["spec"]["router"] = {**body["spec"]["router"], "shared": "chat", **router}
    return body


def found(body: Body, pools: list[Body]) -> SharedRouter | Problem:
    spec = InferencePoolSpec.model_validate(body["spec"])
    return shared_router(replace(pool_ref(body), shared_router=spec.router.shared), spec, pools)


def test_members_are_the_namespaces_valid_pools_naming_the_router_by_name() -> None:
    llama, qwen = member("sim-llama"), member("sim-qwen", QWEN)
    elsewhere = member("sim-other")
    elsewhere["metadata"]["namespace"] = "other"
    going = member("sim-going")
    going["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    invalid = member("sim-invalid")
    invalid["spec"]["slo"] = {"ttftMs": -1}
    own = member("sim-own", shared=None)
    router = found(qwen, [qwen, llama, elsewhere, going, invalid, own, member("sim-beta", shared="beta")])
    assert isinstance(router, SharedRouter)
    assert router.name == "chat"
    assert [m.name for m in router.members] == ["sim-llama", "sim-qwen"]
    assert router.spec.model.name == llama["spec"]["model"]["name"]  # the first member's
    # The pool itself is a member before the cache holds it.
    early = found(qwen, [llama])
    assert isinstance(early, SharedRouter) and [m.name for m in early.members] == ["sim-llama", "sim-qwen"]


def test_a_member_differing_on_the_routers_deployment_is_refused_and_left_out() -> None:
    llama = member("sim-llama")
    qwen = member("sim-qwen", QWEN, replicas=2, service={"port": 9000})
    refused = found(qwen, [llama, qwen])
    assert isinstance(refused, Problem) and refused.reason == SHARED_ROUTER_CONFLICT
    assert refused.message.startswith(
        "spec.router.replicas, spec.router.service: differ from pool sim-llama's"
    )
    assert "apiKeySecret" in refused.message
    router = found(llama, [llama, qwen])
    assert isinstance(router, SharedRouter) and [m.name for m in router.members] == ["sim-llama"]
    # Per-pool policies are no conflict: each pool keeps its own.
    policies = member("sim-qwen", QWEN, balancePolicy="round-robin", admissionPolicy="priority", maxQueue=8)
    kept = found(policies, [llama, policies])
    assert isinstance(kept, SharedRouter) and len(kept.members) == 2


def test_a_refused_member_is_a_status_with_its_plan() -> None:
    llama, qwen = member("sim-llama"), member("sim-qwen", QWEN, debug=True)
    decision = decide(qwen, Capabilities(), Images(), catalog_planner(), sharing=[llama, qwen])
    assert decision.objects is None and decision.problem is not None
    assert decision.problem.reason == SHARED_ROUTER_CONFLICT and decision.problem.planned
    assert decision.plan is not None


KEY_LLAMA, KEY_QWEN = ("serving", "sim-llama"), ("serving", "sim-qwen")


@pytest.fixture
async def controller() -> AsyncIterator[tuple[Controller, MemoryApi]]:
    api = MemoryApi()
    running = Controller(OperatorSettings(), catalog_planner(), api, instance="test")
    await running.start()
    yield running, api
    await running.stop()


def router_args(api: MemoryApi) -> list[str]:
    args: list[str] = api.objects["Deployment", "chat"]["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def owners(api: MemoryApi, kind: str = "Deployment") -> list[str]:
    return [ref["name"] for ref in api.objects[kind, "chat"]["metadata"]["ownerReferences"]]


def echo(running: Controller, api: MemoryApi) -> None:
    """The watch's events for what the API holds (as after each apply)."""
    for body in list(api.objects.values()):
        running.cache.observe_child("MODIFIED", copy.deepcopy(body))


async def test_two_pools_one_router_then_one_leaves_then_the_last(
    controller: tuple[Controller, MemoryApi],
) -> None:
    running, api = controller
    running.cache.observe_pool(None, api.store_pool(member("sim-llama")))
    await running.queue.join()
    running.cache.observe_pool(None, api.store_pool(member("sim-qwen", QWEN)))
    await running.queue.join()
    echo(running, api)
    await running.queue.join()

    assert ("Deployment", "sim-llama-router") not in api.objects
    assert ("Deployment", "sim-qwen-router") not in api.objects
    assert router_args(api)[:4] == ["--pool", "sim-llama", "--pool", "sim-qwen"]
    assert owners(api) == owners(api, "Service") == ["sim-llama", "sim-qwen"]
    role = api.objects["Role", "chat"]
    assert role["rules"][1]["resourceNames"] == ["sim-llama", "sim-qwen"]
    for key in (KEY_LLAMA, KEY_QWEN):
        record = running.cache.get(key)
        assert record is not None and record.status is not None and record.status.router is not None
        assert record.status.router.shared == "chat"
        assert record.status.router.endpoint == "http://chat.serving.svc.cluster.local:8000/v1"
        assert ("Deployment", "chat") in record.children  # a child of each member
    # Each pool's notifications reach the shared router's pods.
    for pool in ("sim-llama", "sim-qwen"):
        notify = api.objects["Service", f"{pool}-kv-notify"]
        assert notify["spec"]["selector"] == {
            "tandem.dev/router": "chat",
            "app.kubernetes.io/component": "router",
        }

    # sim-qwen is deleted: the other member renders the router without it.
    qwen = api.pools.pop(KEY_QWEN)
    running.cache.observe_pool("DELETED", qwen)
    for kind, name in [k for k in api.objects if k[1].startswith("sim-qwen")]:
        running.cache.observe_child("DELETED", api.objects.pop((kind, name)))  # the garbage collector's part
    await running.queue.join()
    assert router_args(api)[:3] == ["--pool", "sim-llama", "--namespace"]
    assert owners(api) == ["sim-llama"]
    echo(running, api)
    await running.queue.join()
    assert running.cache.get(KEY_QWEN) is None  # nothing of it stays recorded

    # The last member leaves the shared router: its objects go, the pool's own router comes.
    llama = api.pools[KEY_LLAMA]
    llama["spec"]["router"].pop("shared")
    llama["metadata"].update(generation=2, resourceVersion="2")
    running.cache.observe_pool("MODIFIED", api.store_pool(llama))
    await running.queue.join()
    assert not [key for key in api.objects if key[1] == "chat"]
    assert ("Deployment", "sim-llama-router") in api.objects


async def test_a_member_leaving_is_dropped_by_the_others_and_keeps_them_serving(
    controller: tuple[Controller, MemoryApi],
) -> None:
    running, api = controller
    for body in (member("sim-llama"), member("sim-qwen", QWEN)):
        running.cache.observe_pool(None, api.store_pool(body))
        await running.queue.join()
    echo(running, api)
    await running.queue.join()
    llama = api.pools[KEY_LLAMA]
    llama["spec"]["router"].pop("shared")
    llama["metadata"].update(generation=2, resourceVersion="2")
    running.cache.observe_pool("MODIFIED", api.store_pool(llama))
    await running.queue.join()
    assert owners(api) == ["sim-qwen"]  # not pruned by the pool that left: sim-qwen's still
    assert router_args(api)[:3] == ["--pool", "sim-qwen", "--namespace"]
    assert ("Deployment", "sim-llama-router") in api.objects
    echo(running, api)
    await running.queue.join()
    record = running.cache.get(KEY_LLAMA)
    assert record is not None and ("Deployment", "chat") not in record.children


def _nixl(body: Body) -> Body:
    body["spec"]["disaggregation"] = {"mode": "Always", "kvTransfer": {"connector": "nixl"}}
    return body


@pytest.mark.parametrize(
    ("connectors", "port"),
    [(("lmcache", "nixl"), 7500), (("nixl", "lmcache"), 7500), (("nixl", "nixl"), None)],
)
def test_a_shared_router_takes_notifications_where_any_members_connector_sends_them(
    connectors: tuple[str, str], port: int | None
) -> None:
    bodies = [member("sim-a"), member("sim-b", QWEN)]
    bodies = [_nixl(body) if kind == "nixl" else body for body, kind in zip(bodies, connectors, strict=True)]
    shared = found(bodies[0], bodies)
    assert isinstance(shared, SharedRouter) and shared.notify_port == port


def test_a_shared_routers_member_planned_aggregated_keeps_the_policy_that_guards_the_port() -> None:
    """The shared router opens its port for any LMCache member, whatever that member's plan: the
    member's NetworkPolicy must come with it."""
    spec = example_spec("simulator-pool.yaml", router={"shared": "chat"})
    llama = pool_ref_of("sim-llama", shared_router="chat")
    shared = SharedRouter(name="chat", members=(llama,), spec=spec, notify_port=7500)
    objects = render(spec, layout(spec, prefill=0), ref=llama, network_policy=True, shared=shared)
    assert {o["kind"] for o in objects if o["metadata"]["name"] == "sim-llama-kv-notify"} == {
        "Service",
        "NetworkPolicy",
    }
