"""KV handoff configuration: vLLM's ``--kv-transfer-config`` and LMCache's PD YAML, per role.

Facts from ../shared/docs/protocols.md: LMCache prefillers are ``kv_producer`` senders that notify
the proxy (the router) at ``pd_proxy_host:pd_proxy_port``; decoders are ``kv_consumer`` receivers
listening on one init and one alloc port per TP rank. NIXL engines are ``kv_both``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from tandem.api import KvConnector
from tandem.api.spec import LmcacheOptions
from tandem.operator.build.meta import Manifest, manifest, metadata
from tandem.operator.naming import PoolRef, Role

LMCACHE_CONFIG_DIR = "/etc/lmcache"
LMCACHE_CONFIG_KEY = "lmcache.yaml"
LMCACHE_CONFIG_FILE = f"{LMCACHE_CONFIG_DIR}/{LMCACHE_CONFIG_KEY}"
# Transports of LMCache's examples: CUDA IPC within a node, TCP across nodes.
UCX_TLS = "cuda_ipc,cuda_copy,tcp"
NIXL_SIDE_CHANNEL_PORT = 5600


def kv_transfer_config(connector: KvConnector, role: Role) -> dict[str, Any]:
    if connector is KvConnector.NIXL:
        return {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    extra: dict[str, Any] = {"discard_partial_chunks": False}
    if role is Role.PREFILL:
        extra["lmcache_rpc_port"] = "producer1"
        kv_role = "kv_producer"
    else:
        extra["lmcache_rpc_port"] = "consumer1"
        extra["skip_last_n_tokens"] = 1
        kv_role = "kv_consumer"
    return {"kv_connector": "LMCacheConnectorV1", "kv_role": kv_role, "kv_connector_extra_config": extra}


def kv_transfer_arg(connector: KvConnector, role: Role) -> str:
    """The ``--kv-transfer-config`` value: compact JSON, as vLLM parses it."""
    return json.dumps(kv_transfer_config(connector, role), separators=(",", ":"))


def decoder_port_names(options: LmcacheOptions, tensor_parallel: int) -> list[tuple[str, int]]:
    """(name, port) of a decoder's LMCache listeners: init then alloc, one each per TP rank."""
    init = [(f"kv-init-{rank}", options.peer_init_port + rank) for rank in range(tensor_parallel)]
    alloc = [(f"kv-alloc-{rank}", options.peer_alloc_port + rank) for rank in range(tensor_parallel)]
    return init + alloc


def lmcache_config(
    pool: PoolRef, role: Role, options: LmcacheOptions, tensor_parallel: int
) -> dict[str, Any]:
    """LMCache's PD configuration for one role (the current ``pd_*`` keys)."""
    common: dict[str, Any] = {
        "chunk_size": options.chunk_size,
        "local_cpu": False,
        "enable_pd": True,
        "transfer_channel": options.transfer_channel,
    }
    if role is Role.PREFILL:
        specific: dict[str, Any] = {
            "pd_role": "sender",
            # Several router replicas share this one address; they forward each other's notices.
            "pd_proxy_host": pool.router_host,
            "pd_proxy_port": options.proxy_port,
            "pd_buffer_size": options.prefiller_buffer_bytes,
        }
    else:
        specific = {
            "pd_role": "receiver",
            "pd_peer_host": "0.0.0.0",
            "pd_peer_init_port": [options.peer_init_port + rank for rank in range(tensor_parallel)],
            "pd_peer_alloc_port": [options.peer_alloc_port + rank for rank in range(tensor_parallel)],
            "pd_buffer_size": options.decoder_buffer_bytes,
        }
    return {**common, **specific, "pd_buffer_device": "cuda", "nixl_backends": list(options.nixl_backends)}


def lmcache_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


def lmcache_config_map(pool: PoolRef, role: Role, config_yaml: str) -> Manifest:
    return manifest(
        "v1",
        "ConfigMap",
        metadata(pool, pool.lmcache_config(role), pool.engine_labels(role)),
        data={LMCACHE_CONFIG_KEY: config_yaml},
    )


def digest(text: str) -> str:
    """A short digest of a configuration, for a pod-template annotation that rolls pods on change."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
