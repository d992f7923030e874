"""LMCache PD (``LMCacheConnectorV1``) as the simulator runs it: the settings an engine needs for
it, and the end a process takes by its ``pd_role`` (:mod:`tandem.sim.lmcache_sender` or
:mod:`tandem.sim.lmcache_receiver`)."""

from __future__ import annotations

from tandem.planner.connectors import LMCACHE_NO_DATA_PARALLEL
from tandem.sim.connector import KVConnector, SimulatedConnector
from tandem.sim.faults import FaultState
from tandem.sim.lmcache_receiver import LMCacheReceiver
from tandem.sim.lmcache_sender import LMCacheSender
from tandem.sim.metrics import SimMetrics
from tandem.sim.settings import SimSettings

VLLM_NAME = "LMCacheConnectorV1"


def check(settings: SimSettings) -> None:
    """Raise ValueError for an LMCache PD setup the engine could not run (or the simulator does
    not model)."""
    config, lmcache = settings.kv_transfer_config, settings.lmcache
    assert config is not None  # the registry calls this for --kv-transfer-config LMCacheConnectorV1
    if lmcache is None or not lmcache.enable_pd:
        raise ValueError(f"{VLLM_NAME} needs an LMCache config (LMCACHE_CONFIG_FILE) with enable_pd")
    expected = {"kv_producer": "sender", "kv_consumer": "receiver"}.get(config.kv_role)
    if expected is None:
        raise ValueError(f"{VLLM_NAME} PD roles are kv_producer and kv_consumer, not {config.kv_role}")
    if lmcache.pd_role != expected:
        raise ValueError(
            f"kv_role {config.kv_role} needs pd_role {expected}, the LMCache config has {lmcache.pd_role}"
        )
    if settings.data_parallel_size > 1:
        raise ValueError(f"--data-parallel-size {settings.data_parallel_size}: {LMCACHE_NO_DATA_PARALLEL}")
    if lmcache.pd_backend_mode != "async":
        raise ValueError("the simulator models pd_backend_mode async (LMCache's default) only")
    if lmcache.pd_buffer_size is None:
        raise ValueError("the LMCache config needs pd_buffer_size")
    if lmcache.pd_role == "sender" and (lmcache.pd_proxy_host is None or lmcache.pd_proxy_port is None):
        raise ValueError("a sender's LMCache config needs pd_proxy_host and pd_proxy_port")
    if lmcache.pd_role == "receiver":
        chunk_bytes = lmcache.chunk_size * settings.kv_bytes_per_token // settings.world_size
        if lmcache.pd_buffer_size < chunk_bytes:
            raise ValueError(
                f"pd_buffer_size {lmcache.pd_buffer_size} is smaller than one chunk ({chunk_bytes} B)"
            )
        for key in ("pd_peer_init_port", "pd_peer_alloc_port"):
            ports = getattr(lmcache, key)
            if ports is None or len(ports) != settings.world_size:
                raise ValueError(f"{key} needs one port per worker rank (TP x PP = {settings.world_size})")


def end(settings: SimSettings, metrics: SimMetrics, faults: FaultState) -> KVConnector:
    """The prefiller's end (sender) or the decoder's (receiver)."""
    lmcache = settings.lmcache
    assert lmcache is not None  # check() refused settings without one
    if lmcache.pd_role == "sender":
        return LMCacheSender(settings, lmcache, metrics, faults)
    return LMCacheReceiver(settings, lmcache, metrics, faults)


LMCACHE = SimulatedConnector(VLLM_NAME, end, check)
