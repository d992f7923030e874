"""LMCache offload tiers (spec.disaggregation.kvTransfer.lmcache.offload): what the operator renders
and what it refuses, naming the field.

LMCache 0.5.6 facts (the lmcache 0.5.6 wheel's lmcache/): the keys and their types (v1/config.py:91-119:
local_cpu bool, max_local_cpu_size float, local_disk str, max_local_disk_size float, remote_url
str, remote_serde str); sizes are GiB per worker rank (v1/storage_backend/local_cpu_backend.py:403
and local_disk_backend.py:190 multiply by 1024**3); local_disk takes a plain folder or file://
(v1/config_base.py:50-85); in PD mode the CPU tier exists only with local_cpu, and the disk and
remote tiers need it (v1/storage_backend/__init__.py:173-190, 217-223; remote_backend.py:610-614);
a kv_consumer never saves (integration/vllm/vllm_v1_adapter.py:1024-1026, 1633), so only
prefillers get tiers; remote_serde is naive, kivi or cachegen (naive_serde/__init__.py:29-39);
remote_url needs a scheme (v1/storage_backend/connector/__init__.py:414-416).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from operator_cases import engine_container, find
from operator_decisions import pool_body, refused, run

from tandem.operator.build.quantity import quantity_bytes, with_memory

CPU_DISK = {"cpu": {"sizeGiB": 4}, "disk": {"sizeGiB": 50}}


def offload_body(offload: Any, **spec: Any) -> dict[str, Any]:
    return pool_body(
        disaggregation__mode="Always", disaggregation__kvTransfer__lmcache={"offload": offload}, **spec
    )


def lmcache_config(objects: list[dict[str, Any]], role: str) -> dict[str, Any]:
    config_map = find(objects, "ConfigMap", f"sim-llama-{role}-lmcache")
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["lmcache.yaml"])
    return loaded


def test_prefillers_get_the_tiers_and_decoders_none() -> None:
    decision = run(
        offload_body({**CPU_DISK, "remote": {"url": "redis://kv-store:6379", "serde": "cachegen"}})
    )
    assert decision.objects is not None, decision.problem
    prefill = lmcache_config(decision.objects, "prefill")
    assert prefill["local_cpu"] is True and prefill["max_local_cpu_size"] == 4.0
    assert prefill["local_disk"] == "/var/cache/lmcache-disk" and prefill["max_local_disk_size"] == 50.0
    assert prefill["remote_url"] == "redis://kv-store:6379" and prefill["remote_serde"] == "cachegen"
    decode = lmcache_config(decision.objects, "decode")
    assert decode["local_cpu"] is False
    assert not {"max_local_cpu_size", "local_disk", "remote_url"} & decode.keys()


def test_the_disk_tier_is_an_emptydir_sized_for_every_gpu_of_the_pod() -> None:
    decision = run(offload_body(CPU_DISK, prefill__tensorParallel=2, decode__tensorParallel=2))
    assert decision.objects is not None, decision.problem
    pod = find(decision.objects, "Deployment", "sim-llama-prefill")["spec"]["template"]["spec"]
    assert {"name": "lmcache-disk", "emptyDir": {"sizeLimit": "100Gi"}} in pod["volumes"]
    mounts = engine_container(decision.objects, "sim-llama", "prefill")["volumeMounts"]
    assert {"name": "lmcache-disk", "mountPath": "/var/cache/lmcache-disk"} in mounts
    decoder = find(decision.objects, "Deployment", "sim-llama-decode")["spec"]["template"]["spec"]
    assert all(volume["name"] != "lmcache-disk" for volume in decoder["volumes"])


def test_a_real_engine_pod_asks_for_the_cpu_tier_on_top_of_its_memory() -> None:
    gib = 2**30
    # No memory set: the request becomes the tier (pinned memory the scheduler must find).
    assert with_memory({"requests": {"nvidia.com/gpu": "2"}}, 8 * gib)["requests"]["memory"] == "8Gi"
    # Set: the tier comes on top of the engine's own, request and limit alike.
    both = with_memory({"requests": {"memory": "500M"}, "limits": {"memory": "64Gi"}}, 8 * gib)
    assert quantity_bytes(both["requests"]["memory"]) == pytest.approx(500e6 + 8 * gib, abs=2**20)
    assert both["limits"]["memory"] == "72Gi"
    # A quantity it cannot read is left for the API server to refuse.
    assert with_memory({"limits": {"memory": "lots"}}, gib)["limits"]["memory"] == "lots"


@pytest.mark.parametrize(
    ("offload", "message"),
    [
        ({"disk": {"sizeGiB": 10}}, "offload.disk needs offload.cpu"),
        ({"remote": {"url": "lm://server:65432"}}, "offload.remote needs offload.cpu"),
        ({"cpu": {"sizeGiB": 0}}, "offload.cpu.sizeGiB: Input should be greater than 0"),
        ({"cpu": {"sizeGiB": 5000}}, "offload.cpu.sizeGiB: Input should be less than or equal to 4096"),
        ({"cpu": {"sizeGiB": 1}, "remote": {"url": "server:65432"}}, "is not <scheme>://"),
        ({"cpu": {"sizeGiB": 1}, "remote": {"url": "mock://100/"}}, "is not <scheme>://"),
        ({"cpu": {"sizeGiB": 1}, "remote": {"url": "redis://u:pw@redis:6379"}}, "holds credentials"),
        ({"cpu": {"sizeGiB": 1}, "remote": {"url": "lm://s:1", "serde": "zip"}}, "remote.serde"),
        ({"cpu": {"sizeGiB": 1}, "disk": {"sizeGiB": 1, "mountPath": "a,b"}}, "disk.mountPath"),
    ],
)
def test_tiers_that_cannot_work_are_refused_naming_the_field(offload: Any, message: str) -> None:
    problem = refused(offload_body(offload))
    assert "spec.disaggregation" in problem and message in problem


@pytest.mark.parametrize(
    "disaggregation",
    [{"mode": "Never"}, {"mode": "Always", "kvTransfer": {"connector": "nixl"}}],
)
def test_tiers_need_the_lmcache_connector(disaggregation: dict[str, Any]) -> None:
    body = pool_body()
    body["spec"]["disaggregation"] = {**disaggregation}
    body["spec"]["disaggregation"].setdefault("kvTransfer", {})["lmcache"] = {"offload": CPU_DISK}
    problem = refused(body)
    assert "kvTransfer.lmcache.offload: the offload tiers are LMCache's" in problem


def test_an_env_variable_cannot_override_a_rendered_tier() -> None:
    # LMCache reads LMCACHE_<KEY> after its file (v1/config_base.py:568-572): refused like any LMCACHE_*.
    body = offload_body(CPU_DISK, engine__env=[{"name": "LMCACHE_MAX_LOCAL_CPU_SIZE", "value": "500"}])
    assert "LMCACHE_MAX_LOCAL_CPU_SIZE is managed by the operator" in refused(body)
