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
# The prefill answer's kv_transfer_params (vLLM 0.33), on the length cap and on EOS/stop alike.
NIXL_PREFILL_RESPONSE_FIELDS = frozenset(
    {
        "do_remote_prefill",
        "do_remote_decode",
        "remote_block_ids",
        "remote_engine_id",
        "remote_request_id",
        "remote_host",
        "remote_port",
        "tp_size",
        "dcp_size",
        "pp_size",
        "remote_num_tokens",
        "remote_blocks_expiry_time",
        "remote_registration_generation",
        "transfer_mode",
    }
)

# vLLM 0.33 data and expert parallelism (protocols.md, "vLLM 0.33 data and expert parallelism"), as
# the vllm 0.33.0 wheel defines the flags: (long name, short alias, argparse keywords), with the line.
VLLM_PARALLEL_FLAGS: tuple[tuple[str, str | None, dict[str, Any]], ...] = (
    ("--tensor-parallel-size", "-tp", {"type": int, "default": 1}),  # engine/arg_utils.py:1208-1210
    ("--pipeline-parallel-size", "-pp", {"type": int, "default": 1}),  # engine/arg_utils.py:1170-1174
    ("--data-parallel-size", "-dp", {"type": int, "default": 1}),  # engine/arg_utils.py:1240-1242
    ("--data-parallel-rank", "-dpn", {"type": int}),  # engine/arg_utils.py:1243-1251
    ("--data-parallel-start-rank", "-dpr", {"type": int}),  # engine/arg_utils.py:1252-1257
    ("--data-parallel-size-local", "-dpl", {"type": int}),  # engine/arg_utils.py:1258-1263
    ("--data-parallel-address", "-dpa", {"type": str}),  # engine/arg_utils.py:1264-1269
    ("--data-parallel-rpc-port", "-dpp", {"type": int}),  # engine/arg_utils.py:1270-1276
    ("--data-parallel-backend", "-dpb", {"type": str, "default": "mp"}),  # engine/arg_utils.py:1277-1283
    # Booleans of ParallelConfig get argparse.BooleanOptionalAction (engine/arg_utils.py:386).
    ("--data-parallel-hybrid-lb", "-dph", {"action": "bool", "default": False}),  # arg_utils.py:1284-1288
    ("--data-parallel-external-lb", "-dpe", {"action": "bool", "default": False}),  # arg_utils.py:1289-1293
    ("--enable-expert-parallel", "-ep", {"action": "bool", "default": False}),  # arg_utils.py:1304-1308
    # ParallelConfig.All2AllBackend (config/parallel.py:45-60), less "passthrough" (arg_utils.py:1159-1161).
    (
        "--all2all-backend",
        None,
        {
            "choices": [
                "naive",
                "pplx",
                "deepep_high_throughput",
                "deepep_low_latency",
                "deepep_v2",
                "mori_high_throughput",
                "mori_low_latency",
                "moonep",
                "nixl_ep",
                "allgather_reducescatter",
                "flashinfer_all2allv",
                "flashinfer_nvlink_two_sided",
                "flashinfer_nvlink_one_sided",
            ],
            "default": "allgather_reducescatter",  # config/parallel.py:220
        },
    ),
    ("--headless", None, {"action": "store_true"}),  # entrypoints/common/cli_args.py:444-450
    ("--api-server-count", "-asc", {"type": int}),  # entrypoints/common/cli_args.py:451-458
)
# The NIXL side channel of a DP rank: VLLM_NIXL_SIDE_CHANNEL_PORT + data_parallel_index
# (distributed/kv_transfer/kv_connector/v1/nixl/base_scheduler.py:77-80), the global DP rank of the
# engine process (v1/engine/core.py:1545); the port's default is 5600 (envs.py:1725-1727).
NIXL_SIDE_CHANNEL_PORT = 5600
