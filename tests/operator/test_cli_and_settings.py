"""`tandem operator` and its settings: environment and flags, read once, with clear errors."""

from __future__ import annotations

import pytest
from paths import TESTS

from tandem.cli import main
from tandem.operator.settings import (
    DEFAULT_MAX_GPUS_PER_POOL,
    DEFAULT_VLLM_IMAGE,
    LMCACHE_VERSION,
    VLLM_VERSION,
    SettingsError,
    settings_from_env,
)

GOLDEN_RBAC = TESTS / "golden" / "operator" / "operator-rbac.yaml"


def test_defaults_name_pinned_engine_image() -> None:
    settings = settings_from_env({})
    assert settings.images.vllm == DEFAULT_VLLM_IMAGE
    assert DEFAULT_VLLM_IMAGE.endswith(f":{VLLM_VERSION}-lmcache{LMCACHE_VERSION}")
    assert settings.namespaces == () and settings.kubeconfig is None


def test_environment_then_flags() -> None:
    env = {
        "TANDEM_IMAGE": "registry.local/tandem:dev",
        "TANDEM_VLLM_IMAGE": "registry.local/vllm:dev",
        "TANDEM_OPERATOR_NAMESPACES": "team-a, team-b,",
        "TANDEM_OPERATOR_WORKERS": "8",
    }
    settings = settings_from_env(env, workers=2, metrics_port=None)
    assert settings.images.tandem == "registry.local/tandem:dev"
    assert settings.images.vllm == "registry.local/vllm:dev"
    assert settings.namespaces == ("team-a", "team-b")
    assert settings.workers == 2  # the flag wins
    assert settings.metrics_port == 9090  # an absent flag keeps the default


def test_bad_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="TANDEM_OPERATOR_METRICS_PORT"):
        settings_from_env({"TANDEM_OPERATOR_METRICS_PORT": "ninety"})


def test_rbac_subcommand_prints_the_generated_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operator", "rbac"]) == 0
    assert capsys.readouterr().out == GOLDEN_RBAC.read_text()


def test_operator_refuses_bad_settings_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["operator", "--workers", "0"]) == 2
    assert "--workers: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_images_own_user_can_replace_the_pinned_uid() -> None:
    assert settings_from_env({}).images.run_as_user == 65532
    assert settings_from_env({"TANDEM_RUN_AS_USER": "image"}).images.run_as_user is None
    assert settings_from_env({"TANDEM_RUN_AS_USER": "1000"}).images.run_as_user == 1000


def test_the_gpu_limit_per_pool_comes_from_the_environment_or_the_flag(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert settings_from_env({}).max_gpus_per_pool == DEFAULT_MAX_GPUS_PER_POOL
    env = {"TANDEM_OPERATOR_MAX_GPUS_PER_POOL": "64"}
    assert settings_from_env(env).max_gpus_per_pool == 64
    assert settings_from_env(env, max_gpus_per_pool=8).max_gpus_per_pool == 8
    with pytest.raises(SettingsError, match="TANDEM_OPERATOR_MAX_GPUS_PER_POOL"):
        settings_from_env({"TANDEM_OPERATOR_MAX_GPUS_PER_POOL": "0"})
    assert main(["operator", "--max-gpus-per-pool", "0"]) == 2
    assert "--max-gpus-per-pool: Input should be greater than or equal to 1" in capsys.readouterr().err
