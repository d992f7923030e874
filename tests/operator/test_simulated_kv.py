"""A simulated pool of any catalog model holds its KV as the real engines would, as the router counts
it: the operator renders the simulator's `--kv-bytes-per-token` and `--use-mla` from the planner's
formula (tandem.planner.kv_cache). Before, every simulator ran with its defaults (Llama-3.1-8B's
128 KiB a token, GQA): a simulated DeepSeek-V3 decoder's buffer held 16 times more chunks than the
router admitted against, and its prefiller sent eight notifications per handoff where the router,
as for the real model, waits for one.

Each case runs the decoder the operator renders (its arguments through `tandem sim`'s own parser, its
LMCache ConfigMap as the file) and reads its PD buffer off `GET /admin/pd_buffer`.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_cases import engine_container, example_spec, layout, pool, render

from tandem.api import InferencePoolSpec
from tandem.cli import build_parser
from tandem.operator.build.connectors.lmcache import LMCACHE_CONFIG_KEY
from tandem.planner import load_catalog
from tandem.router.pool import pool_config_from_resource
from tandem.sim.cli import build_settings
from tandem.sim.testing import sim_client

# Catalog models of each KV shape: GQA with 8 KV heads, GQA with 4 (replicated past TP 4), MLA.
MODELS = ("meta-llama/Llama-3.1-8B", "Qwen/Qwen2.5-7B", "deepseek-ai/DeepSeek-V3")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def simulated_spec(model: str, tp: int) -> InferencePoolSpec:
    return example_spec(
        "simulator-pool.yaml",
        model={"name": model},
        accelerator={"type": "H200-141GB"},
        prefill={"tensorParallel": tp},
        decode={"tensorParallel": tp},
    )


def decoder_config(objects: list[dict[str, Any]], name: str, tmp_path: Path, tp: int) -> Path:
    """The decoder's rendered LMCache YAML, on free loopback ports instead of the pod's."""
    config_map = next(
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == f"{name}-decode-lmcache"
    )
    config = yaml.safe_load(config_map["data"][LMCACHE_CONFIG_KEY])
    ports = free_ports(2 * tp)
    config.update(pd_peer_host="127.0.0.1", pd_peer_init_port=ports[:tp], pd_peer_alloc_port=ports[tp:])
    path = tmp_path / "lmcache.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("tp", [1, 8])
@pytest.mark.parametrize("model", MODELS)
async def test_a_simulated_decoder_holds_as_many_chunks_as_the_router_counts(
    model: str, tp: int, tmp_path: Path
) -> None:
    spec = simulated_spec(model, tp)
    objects = render(spec, layout(spec, tp=tp), ref=pool("sim"))
    args = engine_container(objects, "sim", "decode")["args"]
    parsed = build_parser("sim").parse_args(["sim", *args])
    settings = build_settings(
        parsed,
        {"LMCACHE_CONFIG_FILE": str(decoder_config(objects, "sim", tmp_path, tp)), "PYTHONHASHSEED": "1"},
    )
    router = pool_config_from_resource(
        {
            "apiVersion": "tandem.dev/v1alpha1",
            "kind": "InferencePool",
            "metadata": {"name": "sim"},
            "spec": spec.to_wire(),
        },
        default_threshold=1024,
        prefill_saturation=16,
    )
    async with sim_client(settings) as client:
        buffer = (await client.get("/admin/pd_buffer")).json()
    ranks = buffer["ranks"]
    assert len(ranks) == tp
    assert {rank["capacity"] for rank in ranks} == {router.decoder_buffer_chunks}
    # The ranks that store KV are the ranks that send it, each with a notification.
    assert sum(rank["stores_kv"] for rank in ranks) == router.kv_notifications
    assert router.kv_notifications == (1 if load_catalog().model(model).is_mla else tp)
