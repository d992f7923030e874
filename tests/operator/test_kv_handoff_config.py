"""The KV handoff configuration the operator renders holds protocols.md's facts, for both connectors.

Checked on the rendered objects: kv-transfer-config per connector and role, LMCache's PD keys and
roles, one init and one alloc port per decoder TP rank (container, Service and YAML agree), the
prefillers' notification address at the router, one PYTHONHASHSEED across the pool, and the
simulator accepting the very command line and files the operator gives it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_cases import engine_container, env, example_spec, find, flag, layout, pool, render
from protocol_facts import LMCACHE_CONSUMER as LMCACHE_DECODER
from protocol_facts import LMCACHE_PRODUCER as LMCACHE_PREFILLER
from protocol_facts import NIXL

from tandem.api import KvConnector
from tandem.cli import build_parser
from tandem.operator.build.connectors import KV_PROFILES
from tandem.operator.naming import Role
from tandem.router.cli import settings_from_args
from tandem.sim import cli as sim_cli

DEPRECATED_LMCACHE_KEYS = {
    "enable_nixl",
    "nixl_receiver_host",
    "nixl_receiver_port",
    "nixl_role",
    "nixl_peer_host",
}


@pytest.mark.parametrize(
    ("connector", "role", "expected"),
    [
        (KvConnector.LMCACHE, Role.PREFILL, LMCACHE_PREFILLER),
        (KvConnector.LMCACHE, Role.DECODE, LMCACHE_DECODER),
        (KvConnector.NIXL, Role.PREFILL, NIXL),
        (KvConnector.NIXL, Role.DECODE, NIXL),
    ],
)
def test_engines_get_the_documented_kv_transfer_config(
    connector: KvConnector, role: Role, expected: Any
) -> None:
    spec = example_spec("llama-3.1-8b-h100.yaml", disaggregation={"kvTransfer": {"connector": connector}})
    args = engine_container(render(spec, layout(spec)), "llama", role)["args"]
    rendered = json.loads(flag(args, "--kv-transfer-config"))
    assert rendered == expected == KV_PROFILES[connector].transfer_config(role)


def _lmcache(objects: list[dict[str, Any]], role: str) -> dict[str, Any]:
    config_map = find(objects, "ConfigMap", f"llama-{role}-lmcache")
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["lmcache.yaml"])
    return loaded


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_decoder_listens_on_one_init_and_alloc_port_per_tp_rank(tp: int) -> None:
    spec = example_spec("llama-3.1-8b-h100.yaml")
    objects = render(spec, layout(spec, tp=tp))
    decoder = _lmcache(objects, "decode")
    init = [7300 + rank for rank in range(tp)]
    alloc = [7400 + rank for rank in range(tp)]
    assert (decoder["pd_peer_init_port"], decoder["pd_peer_alloc_port"]) == (init, alloc)
    assert decoder["pd_role"] == "receiver" and decoder["pd_peer_host"] == "0.0.0.0"
    named = {f"kv-init-{r}": p for r, p in enumerate(init)} | {
        f"kv-alloc-{r}": p for r, p in enumerate(alloc)
    }
    container = engine_container(objects, "llama", "decode")
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, **named}
    service = find(objects, "Service", "llama-decode")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8000, **named}
    assert service["spec"]["clusterIP"] == "None"


def test_prefiller_notifies_the_routers_own_cluster_internal_service() -> None:
    spec = example_spec("llama-3.1-8b-h100.yaml")
    objects = render(spec, layout(spec))
    prefiller = _lmcache(objects, "prefill")
    assert prefiller["pd_role"] == "sender"
    assert prefiller["pd_proxy_host"] == "llama-kv-notify.serving.svc.cluster.local"
    notify_service = find(objects, "Service", "llama-kv-notify")
    notify = {p["name"]: p["port"] for p in notify_service["spec"]["ports"]}["kv-notify"]
    router_args = find(objects, "Deployment", "llama-router")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert prefiller["pd_proxy_port"] == notify == int(flag(router_args, "--notify-port")) == 7500
    assert notify_service["spec"]["selector"] == find(objects, "Service", "llama-router")["spec"]["selector"]


@pytest.mark.parametrize("service_type", ["ClusterIP", "NodePort", "LoadBalancer"])
def test_notification_port_never_leaves_the_cluster(service_type: str) -> None:
    """The port takes unauthenticated ZMQ frames (a 400 MB one took the router past its memory
    limit): whatever the client-facing Service's type, it is only on a ClusterIP Service."""
    spec = example_spec("llama-3.1-8b-h100.yaml", router={"service": {"type": service_type}})
    objects = render(spec, layout(spec))
    router_service = find(objects, "Service", "llama-router")
    assert router_service["spec"]["type"] == service_type
    assert [p["name"] for p in router_service["spec"]["ports"]] == ["http"]
    assert find(objects, "Service", "llama-kv-notify")["spec"]["type"] == "ClusterIP"


def test_network_policy_admits_only_prefillers_and_routers_to_the_notification_port() -> None:
    spec = example_spec("llama-3.1-8b-h100.yaml")
    assert not [o for o in render(spec, layout(spec)) if o["kind"] == "NetworkPolicy"]
    objects = render(spec, layout(spec), network_policy=True)
    policy = find(objects, "NetworkPolicy", "llama-kv-notify")["spec"]
    router_pods = find(objects, "Deployment", "llama-router")["spec"]["template"]["metadata"]["labels"]
    prefill_pods = find(objects, "Deployment", "llama-prefill")["spec"]["template"]["metadata"]["labels"]
    decode_pods = find(objects, "Deployment", "llama-decode")["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
        return selector.items() <= labels.items()

    assert selects(policy["podSelector"]["matchLabels"], router_pods)
    assert policy["policyTypes"] == ["Ingress"]
    api, notify = policy["ingress"]
    assert api == {"ports": [{"port": "http", "protocol": "TCP"}]}  # clients, probes, scrapes
    assert notify["ports"] == [{"port": "kv-notify", "protocol": "TCP"}]
    senders = [peer["podSelector"]["matchLabels"] for peer in notify["from"]]
    assert any(selects(s, prefill_pods) for s in senders) and any(selects(s, router_pods) for s in senders)
    assert not any(selects(s, decode_pods) for s in senders)


def test_lmcache_configs_use_current_pd_keys_only() -> None:
    spec = example_spec("llama-3.1-8b-h100.yaml")
    objects = render(spec, layout(spec, tp=2))
    for role in ("prefill", "decode"):
        config = _lmcache(objects, role)
        assert config["enable_pd"] is True and config["transfer_channel"] == "nixl"
        assert config["nixl_backends"] == ["UCX"] and config["local_cpu"] is False
        assert not DEPRECATED_LMCACHE_KEYS & set(config)
    assert _lmcache(objects, "decode")["pd_buffer_size"] == 2 * 1024**3
    assert _lmcache(objects, "prefill")["pd_buffer_size"] == 1024**3


def test_decoders_wait_for_buffer_room_no_longer_than_the_router_waits_for_the_kv() -> None:
    """LMCache 0.5.6 waits for room in a decoder's PD buffer for ever by default
    (`pd_allocation_timeout_sec: inf`, lmcache/v1/config.py:262-267), and its sender awaits each
    answer under a lock per receiver (pd_backend_async.py 745-763): one allocation that never fits
    held up every later handoff from that prefiller to that decoder, for good. Bounded by the
    router's `--handoff-timeout`, it is rolled back (pd_backend_async.py 1386-1470: its chunks and
    reservation freed, -1 to the sender, which sends no notification) once the router has given up
    on it. Prefillers keep the default: there it bounds the staging wait inside the forward pass,
    and a prefill that stops waiting stores a part of its prompt (cache_engine.py 510-525), whose
    transfer never completes and whose sent chunks no decode leg reads."""
    spec = example_spec("llama-3.1-8b-h100.yaml")
    objects = render(spec, layout(spec, tp=2))
    router = settings_from_args(
        build_parser("router").parse_args(
            ["router", "--static-decode", "http://d:8000", "--served-model", "m"]
        ),
        {},
    )
    assert _lmcache(objects, "decode")["pd_allocation_timeout_sec"] == router.handoff_timeout_s
    assert "pd_allocation_timeout_sec" not in _lmcache(objects, "prefill")


def test_every_engine_of_a_pool_shares_one_hash_seed() -> None:
    spec = example_spec("llama-3.1-8b-h100.yaml")
    objects = render(spec, layout(spec))
    seeds = {
        env(engine_container(objects, "llama", role))["PYTHONHASHSEED"] for role in ("prefill", "decode")
    }
    assert len(seeds) == 1 and 0 <= int(seeds.pop()) < 2**32
    other = render(spec, layout(spec), ref=pool("llama", uid="another-uid"))
    assert (
        env(engine_container(other, "llama", "decode"))["PYTHONHASHSEED"]
        != env(engine_container(objects, "llama", "decode"))["PYTHONHASHSEED"]
    )


def test_lmcache_engines_read_their_role_config_and_nixl_engines_their_pod_ip() -> None:
    spec = example_spec("llama-3.1-8b-h100.yaml")
    objects = render(spec, layout(spec))
    for role in ("prefill", "decode"):
        container = engine_container(objects, "llama", role)
        assert env(container)["LMCACHE_CONFIG_FILE"] == "/etc/lmcache/lmcache.yaml"
        pod = find(objects, "Deployment", f"llama-{role}")["spec"]["template"]["spec"]
        mounted = {v["name"]: v for v in pod["volumes"]}["lmcache-config"]["configMap"]["name"]
        assert mounted == f"llama-{role}-lmcache"
    nixl_spec = example_spec("llama-3.1-8b-h100.yaml", disaggregation={"kvTransfer": {"connector": "nixl"}})
    nixl = render(nixl_spec, layout(nixl_spec))
    assert not [o for o in nixl if o["kind"] == "ConfigMap"]
    side_channel = env(engine_container(nixl, "llama", "decode"))["VLLM_NIXL_SIDE_CHANNEL_HOST"]
    assert side_channel == {"fieldRef": {"fieldPath": "status.podIP"}}


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_simulator_accepts_the_rendered_command_line_and_config(role: str, tmp_path: Path) -> None:
    spec = example_spec("simulator-pool.yaml")
    objects = render(spec, layout(spec, tp=2))
    container = engine_container(objects, "llama", role)
    assert container["command"] == ["tandem", "sim"]
    config = tmp_path / "lmcache.yaml"
    config.write_text(find(objects, "ConfigMap", f"llama-{role}-lmcache")["data"]["lmcache.yaml"])
    parser = argparse.ArgumentParser()
    sim_cli.register(parser.add_subparsers())
    args = parser.parse_args(["sim", *container["args"]])
    environment = {k: str(v) for k, v in env(container).items() if isinstance(v, str)}
    settings = sim_cli.build_settings(args, {**environment, "LMCACHE_CONFIG_FILE": str(config)})
    assert settings.timing.prefill_base_ms == 12.5 and settings.timing.max_num_seqs == 128
    assert settings.tensor_parallel_size == 2
    assert settings.lmcache is not None and settings.lmcache.pd_role == (
        "sender" if role == "prefill" else "receiver"
    )
    assert settings.lmcache_hash_seed == int(environment["PYTHONHASHSEED"])
    assert settings.model_names == ("meta-llama/Llama-3.1-8B-Instruct",)


def _router_container(objects: list[Any], pool_name: str) -> dict[str, Any]:
    container: dict[str, Any] = find(objects, "Deployment", f"{pool_name}-router")["spec"]["template"][
        "spec"
    ]["containers"][0]
    return container


@pytest.mark.parametrize(
    ("disaggregation", "prefill", "notified"),
    [
        ({"mode": "Always"}, 1, True),  # LMCache prefillers notify the router
        ({"mode": "Always", "kvTransfer": {"connector": "nixl"}}, 1, False),
        ({"mode": "Never"}, 0, False),  # aggregated: connector none
        ({"mode": "Auto"}, 0, False),  # LMCache, but planned aggregated: no prefiller to notify
    ],
)
def test_the_router_has_a_notification_port_only_where_a_prefiller_can_notify_it(
    disaggregation: dict[str, Any], prefill: int, notified: bool
) -> None:
    """Before, every router got --notify-port and a kv-notify port, and listened, whatever its
    pool's connector; without LMCache's NetworkPolicy nothing guarded it."""
    spec = example_spec("llama-3.1-8b-h100.yaml", disaggregation=disaggregation)
    objects = render(spec, layout(spec, prefill=prefill), network_policy=True)
    router = _router_container(objects, "llama")
    assert ("--notify-port" in router["args"]) is notified
    assert ("kv-notify" in {port["name"] for port in router["ports"]}) is notified
    notify_objects = {o["kind"] for o in objects if o["metadata"]["name"] == "llama-kv-notify"}
    assert notify_objects == ({"Service", "NetworkPolicy"} if notified else set())
