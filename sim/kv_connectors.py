"""The KV connectors the simulator models, by the API's name for each (``tandem.api.KvConnector``).

An engine's ``--kv-transfer-config`` names vLLM's connector class (``kv_connector``); the entry
with that ``vllm_name`` checks the settings and builds the engine's end of it. No
``--kv-transfer-config`` is the ``none`` entry. Adding a connector is its module(s) and one line
here (docs/add-a-kv-connector.md).
"""

from __future__ import annotations

from tandem.api import KvConnector
from tandem.sim.connector import NO_KV_TRANSFER, KVConnector, SimulatedConnector
from tandem.sim.faults import FaultState
from tandem.sim.lmcache_pd import LMCACHE
from tandem.sim.metrics import SimMetrics
from tandem.sim.nixl_connector import NIXL
from tandem.sim.settings import SimSettings

SIMULATED: dict[KvConnector, SimulatedConnector] = {
    KvConnector.LMCACHE: LMCACHE,
    KvConnector.NIXL: NIXL,
    KvConnector.NONE: NO_KV_TRANSFER,
}


def simulated(settings: SimSettings) -> SimulatedConnector:
    """The connector the settings name, once it has checked them; raises ValueError."""
    config = settings.kv_transfer_config
    name = None if config is None else config.kv_connector
    for connector in SIMULATED.values():
        if connector.vllm_name == name:
            connector.check(settings)
            return connector
    known = " or ".join(c.vllm_name for c in SIMULATED.values() if c.vllm_name is not None)
    raise ValueError(f"kv_connector {name!r} is not simulated (use {known})")


def build_connector(settings: SimSettings, metrics: SimMetrics, faults: FaultState) -> KVConnector:
    return simulated(settings).build(settings, metrics, faults)
