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
from tandem.operator.build.kv import kv_transfer_config
from tandem.operator.naming import Role
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
    connector_name = "lmcache" if connector is KvConnector.LMCACHE else "nixl"
    spec = example_spec(
        "llama-3.1-8b-h100.yaml", disaggregation={"kvTransfer": {"connector": connector_name}}
    )
    args = engine_container(render(spec, layout(spec)), "llama", role)["args"]
    assert json.loads(flag(args, "--kv-transfer-config")) == expected == kv_transfer_config(connector, role)


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


def test_prefiller_notifies_the_router_service() -> None:
    spec = example_spec("llama-3.1-8b-h100.yaml")
    objects = render(spec, layout(spec))
    prefiller = _lmcache(objects, "prefill")
    assert prefiller["pd_role"] == "sender"
    assert prefiller["pd_proxy_host"] == "llama-router.serving.svc.cluster.local"
    router_service = find(objects, "Service", "llama-router")
    notify = {p["name"]: p["port"] for p in router_service["spec"]["ports"]}["kv-notify"]
    router_args = find(objects, "Deployment", "llama-router")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert prefiller["pd_proxy_port"] == notify == int(flag(router_args, "--notify-port")) == 7500


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
