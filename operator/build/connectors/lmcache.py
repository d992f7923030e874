"""The LMCache PD connector, as the operator renders it.

Facts from ../shared/docs/protocols.md: LMCache prefillers are ``kv_producer`` senders that notify
the proxy (the router) at ``pd_proxy_host:pd_proxy_port``; decoders are ``kv_consumer`` receivers
listening on one init and one alloc port per TP rank. Each role reads its PD YAML from a ConfigMap.

Prefillers send their notifications to the ``kv-notify`` port of a Service of its own, always
ClusterIP: the port takes unauthenticated ZMQ frames and must never face the outside. Its
NetworkPolicy admits only the pool's prefill pods and router replicas (which forward each other's
notifications) to that port, and anyone to the API port.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from tandem.api import InferencePoolSpec
from tandem.api.offload import OffloadTiers
from tandem.api.spec import HANDOFF_TIMEOUT_SECONDS, LmcacheOptions
from tandem.operator.build.connectors.base import ConnectorEnv, Port, RoleConfig, digest
from tandem.operator.build.connectors.lmcache_offload import disk_volume, offload_config, tier_memory_bytes
from tandem.operator.build.managed import Managed
from tandem.operator.build.meta import Manifest, manifest, metadata
from tandem.operator.naming import PoolRef, Role

if TYPE_CHECKING:
    from tandem.operator.build.engine import EngineContext
    from tandem.operator.layout import RoleLayout

LMCACHE_CONFIG_DIR = "/etc/lmcache"
LMCACHE_CONFIG_KEY = "lmcache.yaml"
LMCACHE_CONFIG_FILE = f"{LMCACHE_CONFIG_DIR}/{LMCACHE_CONFIG_KEY}"
# Transports of LMCache's examples: CUDA IPC within a node, TCP across nodes.
UCX_TLS = "cuda_ipc,cuda_copy,tcp"


def kv_transfer_config(role: Role) -> dict[str, Any]:
    extra: dict[str, Any] = {"discard_partial_chunks": False}
    if role is Role.PREFILL:
        extra["lmcache_rpc_port"] = "producer1"
        kv_role = "kv_producer"
    else:
        extra["lmcache_rpc_port"] = "consumer1"
        extra["skip_last_n_tokens"] = 1
        kv_role = "kv_consumer"
    return {"kv_connector": "LMCacheConnectorV1", "kv_role": kv_role, "kv_connector_extra_config": extra}


def decoder_port_names(options: LmcacheOptions, tensor_parallel: int) -> list[Port]:
    """(name, port) of a decoder's LMCache listeners: init then alloc, one each per TP rank."""
    init = [(f"kv-init-{rank}", options.peer_init_port + rank) for rank in range(tensor_parallel)]
    alloc = [(f"kv-alloc-{rank}", options.peer_alloc_port + rank) for rank in range(tensor_parallel)]
    return init + alloc


def lmcache_config(
    pool: PoolRef,
    role: Role,
    options: LmcacheOptions,
    tensor_parallel: int,
    planned_buffer: int | None = None,
) -> dict[str, Any]:
    """LMCache's PD configuration for one role (the current ``pd_*`` keys); prefillers get the
    offload tiers (lmcache_offload.py says why only they); decoders the spec's buffer, else the
    plan's (`planned_buffer`)."""
    common: dict[str, Any] = {
        "chunk_size": options.chunk_size,
        **offload_config(options.offload if role is Role.PREFILL else None),
        "enable_pd": True,
        "transfer_channel": options.transfer_channel,
    }
    if role is Role.PREFILL:
        specific: dict[str, Any] = {
            "pd_role": "sender",
            # Several router replicas share this one address; they forward each other's notices.
            "pd_proxy_host": pool.notify_host,
            "pd_proxy_port": options.proxy_port,
            "pd_buffer_size": options.prefiller_buffer_bytes,
        }
    else:
        specific = {
            "pd_role": "receiver",
            "pd_peer_host": "0.0.0.0",
            "pd_peer_init_port": [options.peer_init_port + rank for rank in range(tensor_parallel)],
            "pd_peer_alloc_port": [options.peer_alloc_port + rank for rank in range(tensor_parallel)],
            "pd_buffer_size": options.decoder_buffer(planned_buffer),
            # LMCache 0.5.6 waits for room for ever by default (v1/config.py); bounded, a request that
            # finds none is rolled back (its chunks and reservation freed, the sender told -1 and no
            # notification sent: v1/storage_backend/pd_backend_async.py, _async_allocate_and_put and
            # _async_transfer_task), so the sender's next transfer to this decoder, queued behind it
            # (_async_remote_allocate holds a lock per receiver), is not held up for ever.
            "pd_allocation_timeout_sec": HANDOFF_TIMEOUT_SECONDS,
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


def notify_service(pool: PoolRef, spec: InferencePoolSpec) -> Manifest:
    proxy_port = spec.disaggregation.kv_transfer.lmcache.proxy_port
    return manifest(
        "v1",
        "Service",
        metadata(pool, pool.notify, pool.router_labels()),
        spec={
            "type": "ClusterIP",
            "selector": pool.router_selector(),
            "ports": [
                {"name": "kv-notify", "port": proxy_port, "targetPort": "kv-notify", "protocol": "TCP"}
            ],
        },
    )


def notify_network_policy(pool: PoolRef) -> Manifest:
    senders = [
        {"podSelector": {"matchLabels": pool.engine_selector(Role.PREFILL)}},
        {"podSelector": {"matchLabels": pool.router_selector()}},
    ]
    return manifest(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        metadata(pool, pool.notify, pool.router_labels()),
        spec={
            "podSelector": {"matchLabels": pool.router_selector()},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"ports": [{"port": "http", "protocol": "TCP"}]},
                {"from": senders, "ports": [{"port": "kv-notify", "protocol": "TCP"}]},
            ],
        },
    )


class LmcacheProfile:
    env: tuple[ConnectorEnv, ...] = (
        ConnectorEnv(
            "LMCACHE_CONFIG_FILE",
            "spec.disaggregation.kvTransfer.lmcache (rendered into a ConfigMap)",
            value={"value": LMCACHE_CONFIG_FILE},
        ),
        ConnectorEnv("UCX_TLS", f"{UCX_TLS} (LMCache pools)", value={"value": UCX_TLS}),
    )
    # LMCache reads every LMCACHE_* variable after its config file and lets it override the file
    # (lmcache/v1/config_base.py, load_config_with_overrides: from_file, then update_config_from_env).
    env_prefix: Managed | None = Managed(
        "LMCACHE_", "spec.disaggregation.kvTransfer.lmcache, which LMCache lets these variables override"
    )

    def transfer_config(self, role: Role) -> Manifest | None:
        return kv_transfer_config(role)

    def prefix_caching(self, ctx: EngineContext, role: RoleLayout) -> bool:
        """Off on decoders that handoffs push KV to (the pool has prefillers). LMCache 0.5.6 loads
        nothing for the chunks the decoder's vLLM prefix cache already covers
        (integration/vllm/vllm_v1_adapter.py, get_num_new_matched_tokens: `need_to_allocate <= 0`
        returns 0; start_load_kv masks out the chunks below `vllm_cached_tokens`), and its PD
        receiver frees a chunk only when a request retrieves it (v1/cache_engine.py, retrieve:
        `remove_after_retrieve`). With prefix caching on, every handoff whose prompt starts with a
        prefix the decoder has cached (one shared system prompt is enough) leaves those chunks in
        its PD buffer for good, until later handoffs wait for room that never comes."""
        return role.role is not Role.DECODE or ctx.layout.prefill.replicas == 0

    def engine_ports(self, ctx: EngineContext, role: Role) -> list[Port]:
        return self.service_ports(ctx, role)

    def service_ports(self, ctx: EngineContext, role: Role) -> list[Port]:
        if role is not Role.DECODE:
            return []
        options = ctx.spec.disaggregation.kv_transfer.lmcache
        return decoder_port_names(options, ctx.layout.decode.tensor_parallel)

    def volumes(self, ctx: EngineContext, role: RoleLayout) -> tuple[list[Manifest], list[Manifest]]:
        volume = {"name": "lmcache-config", "configMap": {"name": ctx.pool.lmcache_config(role.role)}}
        mount = {"name": "lmcache-config", "mountPath": LMCACHE_CONFIG_DIR, "readOnly": True}
        disk, disk_mount = disk_volume(_tiers(ctx, role), role.gpus_per_pod)
        return [volume, *disk], [mount, *disk_mount]

    def host_memory_bytes(self, ctx: EngineContext, role: RoleLayout) -> int:
        return tier_memory_bytes(_tiers(ctx, role), role.gpus_per_pod)

    def role_config(self, ctx: EngineContext, role: RoleLayout) -> RoleConfig:
        options = ctx.spec.disaggregation.kv_transfer.lmcache
        text = lmcache_yaml(
            lmcache_config(ctx.pool, role.role, options, role.tensor_parallel, role.pd_buffer_bytes)
        )
        return RoleConfig((lmcache_config_map(ctx.pool, role.role, text),), digest(text))

    def notify_port(self, spec: InferencePoolSpec) -> int | None:
        return spec.disaggregation.kv_transfer.lmcache.proxy_port

    def router_objects(
        self, pool: PoolRef, spec: InferencePoolSpec, *, network_policy: bool
    ) -> list[Manifest]:
        notify = [notify_service(pool, spec)]
        return [*notify, notify_network_policy(pool)] if network_policy else notify


def _tiers(ctx: EngineContext, role: RoleLayout) -> OffloadTiers | None:
    """The offload tiers of the role's engines: the pool's on prefillers, none on decoders."""
    return ctx.spec.disaggregation.kv_transfer.lmcache.offload if role.role is Role.PREFILL else None


LMCACHE = LmcacheProfile()
