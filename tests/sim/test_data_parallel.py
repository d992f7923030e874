"""`tandem sim --data-parallel-size N`: N engines behind one API server, as vLLM's internal DP load
balancing runs a DP replica (sim/data_parallel.py), from the command line the operator renders."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml
from operator_cases import GOLDEN

from tandem.cli import build_parser
from tandem.sim.cli import SettingsError, build_settings
from tandem.sim.connector import NoConnector
from tandem.sim.data_parallel import DataParallelEngines
from tandem.sim.engine import Engine
from tandem.sim.metrics import SimMetrics
from tandem.sim.scheduler import Sequence
from tandem.sim.settings import SimSettings
from tandem.sim.testing import metric_value, sim_client
from tandem.sim.tokenizer import default_tokenizer


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["sim", *argv])


def test_the_rendered_dp_ep_command_line_runs_its_ranks_in_one_process() -> None:
    """The golden simulator-dp-ep pod: DP4 with EP, every rank local."""
    (deployment,) = yaml.safe_load_all((GOLDEN / "simulator-dp-ep.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["tandem", "sim"]
    args = parse(*container["args"])
    assert not {"--data-parallel-size", "--enable-expert-parallel", "--all2all-backend"} & set(
        args.ignored_args
    )
    assert build_settings(args, {}).data_parallel_size == 4


@pytest.mark.parametrize(
    "argv",
    [["-dp", "4", "--headless"], ["-dp", "4", "--data-parallel-start-rank", "2"], ["-dp", "4", "-dpl", "2"]],
)
def test_secondary_nodes_are_refused_a_simulated_replica_is_one_process(argv: list[str]) -> None:
    with pytest.raises(SettingsError, match="one process"):
        build_settings(parse(*argv), {})


def test_the_plan_sets_the_ranks_and_the_flag_wins(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"decode": {"engine_timing": {"max_num_seqs": 8}, "data_parallel": 2}}))
    assert build_settings(parse("--plan", str(plan), "--role", "decode"), {}).data_parallel_size == 2
    assert (
        build_settings(parse("--plan", str(plan), "--role", "decode", "-dp", "4"), {}).data_parallel_size == 4
    )


def test_lmcache_takes_no_dp_ranks(tmp_path: Path) -> None:
    """LMCache picks its PD ports by the TP rank (planner/connectors.py, LMCACHE_NO_DATA_PARALLEL)."""
    config = tmp_path / "lmcache.yaml"
    config.write_text(yaml.safe_dump({"enable_pd": True, "pd_role": "sender", "pd_buffer_size": 1 << 30,
                                      "pd_proxy_host": "127.0.0.1", "pd_proxy_port": 7500}))  # fmt: skip
    producer = '{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_producer"}'
    args = parse("-dp", "2", "--kv-transfer-config", producer)
    with pytest.raises(SettingsError, match="DP ranks on one node would share"):
        build_settings(args, {"LMCACHE_CONFIG_FILE": str(config)})


def _ranks(count: int) -> DataParallelEngines:
    settings = SimSettings(data_parallel_size=count)
    metrics = SimMetrics("m")
    return DataParallelEngines(
        [Engine(settings, default_tokenizer(), metrics, NoConnector(), rank) for rank in range(count)]
    )


def test_a_request_goes_to_the_least_loaded_rank_and_ties_take_turns() -> None:
    """vLLM 0.33 DPLBAsyncMPClient (v1/engine/core_client.py:1768-1803): the lowest waiting +
    running, the scan starting one rank later each time."""
    engines = _ranks(3)
    first, second, third = (rank.scheduler for rank in engines.ranks)
    assert [engines.ranks.index(engines.pick()) for _ in range(3)] == [0, 1, 2]  # all idle: turns
    for n in range(2):
        first.add(Sequence(f"a{n}", 16))
    third.add(Sequence("c", 16))
    assert engines.pick() is engines.ranks[1]
    second.add(Sequence("b0", 16))
    second.add(Sequence("b1", 16))
    assert engines.pick() is engines.ranks[2]


async def test_each_rank_reports_its_own_load_gauges_and_all_serve() -> None:
    settings = SimSettings(data_parallel_size=2, speed=100, max_model_len=512)
    async with sim_client(settings) as client:
        for _ in range(4):
            answer = await client.post("/v1/completions", json={"prompt": "Hi there", "max_tokens": 3})
            assert answer.status_code == 200, answer.text
        text = (await client.get("/metrics")).text
    for rank in ("0", "1"):
        assert metric_value(text, "vllm:num_requests_running", engine=rank) == 0
        assert metric_value(text, "vllm:kv_cache_usage_perc", engine=rank) >= 0
