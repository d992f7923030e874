"""`tandem sim` takes vLLM's serve command line: what it understands becomes settings, the rest is
ignored; timing comes from flags or a planner plan; wildcard hosts honour TANDEM_BIND_HOST."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tandem.cli import build_parser, main
from tandem.sim.cli import SettingsError, build_settings, split_unknown

LMCACHE = json.dumps(
    {
        "kv_connector": "LMCacheConnectorV1",
        "kv_role": "kv_consumer",
        "kv_connector_extra_config": {"skip_last_n_tokens": 1},
    }
)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["sim", *argv])


def test_a_vllm_serve_command_line_parses_and_unknown_flags_are_set_aside() -> None:
    args = parse(
        "meta-llama/Llama-3.1-8B",
        "--dtype",
        "bfloat16",
        "--trust-remote-code",
        "--port",
        "9000",
        "--enable-chunked-prefill",
        "--max-num-seqs",
        "64",
        "--quantization=fp8",
        "-tp",
        "2",
    )
    assert args.ignored_args == ["--dtype", "bfloat16", "--trust-remote-code", "--quantization=fp8"]
    settings = build_settings(args, {})
    assert (settings.model, settings.port, settings.tensor_parallel_size) == (
        "meta-llama/Llama-3.1-8B",
        9000,
        2,
    )
    assert settings.timing.max_num_seqs == 64


@pytest.mark.parametrize(
    ("argv", "kept", "ignored"),
    [
        (["--unknown", "value", "MODEL"], ["MODEL"], ["--unknown", "value"]),
        (["--enable-foo", "MODEL"], ["MODEL"], ["--enable-foo"]),
        (["--no-bar", "--port", "1"], ["--port", "1"], ["--no-bar"]),
        (["--seed", "-1"], ["--seed", "-1"], []),
        (["--flag", "--port", "1"], ["--port", "1"], ["--flag"]),
    ],
)
def test_unknown_flags_take_a_value_unless_they_are_switches(
    argv: list[str], kept: list[str], ignored: list[str]
) -> None:
    assert split_unknown(argv, {"--port": None, "--seed": None}) == (kept, ignored)


def test_served_model_names_and_the_model_flag() -> None:
    settings = build_settings(parse("--model", "m", "--served-model-name", "a", "b"), {})
    assert settings.model == "m" and settings.model_names == ("a", "b")


def test_timing_comes_from_the_plan_and_explicit_flags_win(tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    timing = {"prefill_ms_per_token": 0.2, "decode_step_base_ms": 11.0, "max_num_seqs": 32}
    plan.write_text(json.dumps({"prefill": {"engine_timing": timing}, "decode": {"engine_timing": {}}}))
    settings = build_settings(
        parse("--plan", str(plan), "--role", "prefill", "--decode-step-base-ms", "3"), {}
    )
    assert settings.timing.prefill_ms_per_token == 0.2
    assert settings.timing.decode_step_base_ms == 3
    assert settings.timing.max_num_seqs == 32


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--plan", "plan.json"], "--plan needs --role"),
        (["--role", "decode"], "--role needs --plan"),
        (["--plan", "/nonexistent.json", "--role", "decode"], "no engine_timing"),
        (["--kv-transfer-config", "{bad"], "Invalid JSON"),
        (
            ["--kv-transfer-config", '{"kv_connector":"P2pNcclConnector","kv_role":"kv_both"}'],
            "not simulated",
        ),
        (["--kv-transfer-config", LMCACHE], "LMCACHE_CONFIG_FILE"),
        (["--max-model-len", "9999999"], "exceeds the KV capacity"),
        (["--faults", '{"error_rate": 3}'], "error_rate"),
    ],
)
def test_invalid_settings_are_refused_with_the_reason(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        build_settings(parse(*argv), {})


def lmcache_yaml(tmp_path: Path, **keys: object) -> str:
    """An LMCache config file with ``keys`` (YAML flow values); its path."""
    config = tmp_path / "lmcache.yaml"
    config.write_text(
        "".join(f"{key}: {json.dumps(value)}\n" for key, value in {"enable_pd": True, **keys}.items())
    )
    return str(config)


RECEIVER = {"pd_role": "receiver", "pd_peer_init_port": [7300], "pd_peer_alloc_port": 7400}


def test_a_wildcard_host_binds_tandem_bind_host(tmp_path: Path) -> None:
    env = {
        "TANDEM_BIND_HOST": "127.0.0.7",
        "LMCACHE_CONFIG_FILE": lmcache_yaml(
            tmp_path, **RECEIVER, pd_peer_host="0.0.0.0", pd_buffer_size=1 << 30
        ),
        "PYTHONHASHSEED": "0",
        "VLLM_NIXL_SIDE_CHANNEL_HOST": "0.0.0.0",
    }
    settings = build_settings(parse("--kv-transfer-config", LMCACHE), env)
    assert settings.host == "127.0.0.7"
    assert settings.lmcache is not None and settings.lmcache.pd_peer_host == "127.0.0.7"
    assert settings.lmcache.pd_peer_alloc_port == [7400]
    assert settings.nixl.side_channel_host == "127.0.0.7"
    assert settings.lmcache_hash_seed == 0
    assert build_settings(parse("--host", "127.0.0.9"), env).host == "127.0.0.9"
    assert build_settings(parse(), {}).host == "0.0.0.0"


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({**RECEIVER, "pd_buffer_size": 1 << 20}, "smaller than one chunk"),
        (
            {**RECEIVER, "pd_buffer_size": 1 << 30, "pd_peer_init_port": [7300, 7301]},
            "one port per worker rank",
        ),
        (
            {
                "pd_role": "sender",
                "pd_proxy_host": "10.0.0.1",
                "pd_proxy_port": 7500,
                "pd_buffer_size": 1 << 30,
            },
            "kv_role kv_consumer needs pd_role receiver",
        ),
        ({**RECEIVER, "pd_buffer_size": 1 << 30, "pd_backend_mode": "sync"}, "pd_backend_mode async"),
    ],
)
def test_an_lmcache_config_that_cannot_work_is_refused(
    tmp_path: Path, keys: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        build_settings(
            parse("--kv-transfer-config", LMCACHE), {"LMCACHE_CONFIG_FILE": lmcache_yaml(tmp_path, **keys)}
        )


def test_the_lmcache_and_nixl_settings_the_real_engines_read_are_taken(tmp_path: Path) -> None:
    """pd_allocation_timeout_sec (LMCache v1/config.py 262-267, default inf), MLA, and NIXL's
    kv_lease_duration (vLLM nixl/base_scheduler.py 82-86, default 30)."""
    env = {"LMCACHE_CONFIG_FILE": lmcache_yaml(tmp_path, **RECEIVER, pd_buffer_size=1 << 30)}
    settings = build_settings(parse("--kv-transfer-config", LMCACHE, "--use-mla"), env)
    assert settings.use_mla and settings.lmcache is not None
    assert settings.lmcache.pd_allocation_timeout_sec == float("inf")
    env = {
        "LMCACHE_CONFIG_FILE": lmcache_yaml(
            tmp_path, **RECEIVER, pd_buffer_size=1 << 30, pd_allocation_timeout_sec=7
        )
    }
    timed = build_settings(parse("--kv-transfer-config", LMCACHE), env).lmcache
    assert timed is not None and timed.pd_allocation_timeout_sec == 7
    nixl = '{"kv_connector": "NixlConnector", "kv_role": "kv_both"}'
    config = build_settings(parse("--kv-transfer-config", nixl), {}).kv_transfer_config
    assert config is not None and (config.kv_lease_duration, config.kv_load_failure_policy) == (30, "fail")


def test_the_command_exits_2_on_invalid_settings(caplog: pytest.LogCaptureFixture) -> None:
    assert main(["sim", "--kv-transfer-config", "{bad"]) == 2
    assert "cannot start" in caplog.text
