"""Wire facts from ../shared/docs/protocols.md, verbatim, for the tests of every component.

They are the tests' independent oracle: the simulator, the operator's renderings and the router
are checked against these values, never against each other's code.
"""

from __future__ import annotations

from typing import Any

# KV handoff 1: LMCache PD, the engines' --kv-transfer-config.
LMCACHE_PRODUCER: dict[str, Any] = {
    "kv_connector": "LMCacheConnectorV1",
    "kv_role": "kv_producer",
    "kv_connector_extra_config": {"discard_partial_chunks": False, "lmcache_rpc_port": "producer1"},
}
LMCACHE_CONSUMER: dict[str, Any] = {
    "kv_connector": "LMCacheConnectorV1",
    "kv_role": "kv_consumer",
    "kv_connector_extra_config": {
        "discard_partial_chunks": False,
        "lmcache_rpc_port": "consumer1",
        "skip_last_n_tokens": 1,
    },
}

# KV handoff 2: vLLM NIXL: the engine flag and the prefill leg's kv_transfer_params.
NIXL: dict[str, Any] = {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
NIXL_PREFILL_PARAMS: dict[str, Any] = {
    "do_remote_decode": True,
    "do_remote_prefill": False,
    "remote_engine_id": None,
    "remote_block_ids": None,
    "remote_host": None,
    "remote_port": None,
}
