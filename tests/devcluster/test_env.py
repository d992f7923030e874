"""A container's environment and command line, built as the kubelet builds them."""

from __future__ import annotations

import pytest
from kubernetes_asyncio.client import (
    V1ConfigMapEnvSource,
    V1ConfigMapKeySelector,
    V1Container,
    V1EnvFromSource,
    V1EnvVar,
    V1EnvVarSource,
    V1ObjectFieldSelector,
    V1SecretKeySelector,
)

from tandem.devcluster.env import (
    BIND_HOST_ENV,
    DataLookup,
    EnvError,
    PodFacts,
    ServiceLink,
    container_argv,
    container_env,
    expand,
    service_link_env,
)


def lookup(data: dict[str, dict[str, str]]) -> DataLookup:
    return data.get


POD = PodFacts(
    name="decode-0",
    namespace="serving",
    uid="u-1",
    service_account="tandem",
    node_name="tandem-node",
    pod_ip="127.0.1.7",
    host_ip="127.0.0.1",
    labels={"tandem.dev/role": "decode"},
    annotations={},
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)", "alpha"),
        ("x$(A)y$(B)z", "xalphaybetaz"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$", "$"),
        ("cost $5", "cost $5"),
        ("$(A", "$(A"),
        ("trailing $", "trailing $"),
        ("", ""),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, {"A": "alpha", "B": "beta"}) == expected


def field(path: str) -> V1EnvVarSource:
    return V1EnvVarSource(field_ref=V1ObjectFieldSelector(field_path=path))


def test_env_resolves_sources_in_kubernetes_order() -> None:
    container = V1Container(
        name="main",
        env_from=[V1EnvFromSource(config_map_ref=V1ConfigMapEnvSource(name="cfg"), prefix="CFG_")],
        env=[
            V1EnvVar(name="IP", value_from=field("status.podIP")),
            V1EnvVar(name="ROLE", value_from=field("metadata.labels['tandem.dev/role']")),
            V1EnvVar(name="URL", value="http://$(IP):8000/$(CFG_path)"),
            V1EnvVar(
                name="MODEL",
                value_from=V1EnvVarSource(config_map_key_ref=V1ConfigMapKeySelector(name="cfg", key="model")),
            ),
            V1EnvVar(
                name="TOKEN", value_from=V1EnvVarSource(secret_key_ref=V1SecretKeySelector(name="s", key="t"))
            ),
            V1EnvVar(name="PATH", value="/opt/bin:$(PATH)"),
            V1EnvVar(name=BIND_HOST_ENV, value="0.0.0.0"),
        ],
    )
    env = container_env(
        container,
        POD,
        {"PATH": "/usr/bin"},
        lookup({"cfg": {"path": "v1", "model": "llama"}}),
        lookup({"s": {"t": "secret"}}),
    )
    assert env["IP"] == "127.0.1.7"
    assert env["ROLE"] == "decode"
    assert env["URL"] == "http://127.0.1.7:8000/v1"
    assert env["MODEL"] == "llama"
    assert env["TOKEN"] == "secret"
    assert env["CFG_model"] == "llama"
    assert env["PATH"] == "/opt/bin:/usr/bin"
    assert env[BIND_HOST_ENV] == "127.0.1.7"  # always the pod IP, whatever the manifest says


def test_missing_key_is_a_config_error_unless_optional() -> None:
    ref = V1ConfigMapKeySelector(name="cfg", key="absent")
    required = V1Container(
        name="main", env=[V1EnvVar(name="X", value_from=V1EnvVarSource(config_map_key_ref=ref))]
    )
    with pytest.raises(EnvError, match='couldn\'t find key absent in configmap "cfg"'):
        container_env(required, POD, {}, lookup({"cfg": {}}), lookup({}))
    ref.optional = True
    assert "X" not in container_env(required, POD, {}, lookup({"cfg": {}}), lookup({}))


def test_missing_config_map_named_in_error() -> None:
    container = V1Container(
        name="main", env_from=[V1EnvFromSource(config_map_ref=V1ConfigMapEnvSource(name="gone"))]
    )
    with pytest.raises(EnvError, match='configmap "gone" not found'):
        container_env(container, POD, {}, lookup({}), lookup({}))


def test_command_and_args_expand_from_the_final_environment() -> None:
    argv = container_argv(
        ["serve", "--host=$(HOST)"], ["--port", "$(PORT)", "$$(PORT)"], {"HOST": "h", "PORT": "8"}
    )
    assert argv == ["serve", "--host=h", "--port", "8", "$(PORT)"]


def test_service_links_name_every_port() -> None:
    env = service_link_env(
        [ServiceLink("decode-pool", "127.100.0.9", (("http", 8000, "TCP"), (None, 9000, "TCP")))]
    )
    assert env["DECODE_POOL_SERVICE_HOST"] == "127.100.0.9"
    assert env["DECODE_POOL_SERVICE_PORT"] == "8000"
    assert env["DECODE_POOL_SERVICE_PORT_HTTP"] == "8000"
    assert env["DECODE_POOL_PORT"] == "tcp://127.100.0.9:8000"
    assert env["DECODE_POOL_PORT_9000_TCP_ADDR"] == "127.100.0.9"
    assert env["DECODE_POOL_PORT_9000_TCP_PORT"] == "9000"
