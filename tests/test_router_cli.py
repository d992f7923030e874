"""`tandem router`'s command line: flags and environment into settings, bad combinations refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tandem.cli import build_parser, main
from tandem.router.cli import settings_from_args
from tandem.router.settings import RouterSettings


def settings(*argv: str, **environ: str) -> RouterSettings:
    return settings_from_args(build_parser("router").parse_args(["router", *argv]), environ)


def test_kubernetes_mode_is_the_operators_command_line() -> None:
    parsed = settings("--pool", "llama", "--namespace", "team-a", "--port", "8000", "--notify-port", "7500",
                      POD_IP="10.1.2.3")  # fmt: skip
    assert parsed.kubernetes is not None and parsed.static is None
    assert (parsed.kubernetes.pools, parsed.kubernetes.namespace, parsed.kubernetes.kubeconfig) == (
        ("llama",), "team-a", None)  # fmt: skip
    assert parsed.replica_id() == "10.1.2.3:7500"
    assert parsed.listen_host() == "0.0.0.0"


def test_several_pools_and_a_kubeconfig() -> None:
    parsed = settings("--pool", "a", "--pool", "b", "--kubeconfig", "/tmp/kc")
    assert parsed.kubernetes is not None
    assert parsed.kubernetes.pools == ("a", "b") and parsed.kubernetes.kubeconfig == Path("/tmp/kc")


def test_bind_host_replaces_a_wildcard_only() -> None:
    assert settings("--pool", "p", TANDEM_BIND_HOST="127.0.5.9").listen_host() == "127.0.5.9"
    assert settings("--pool", "p", TANDEM_BIND_HOST="127.0.5.9").replica_id() == "127.0.5.9:7500"
    assert (
        settings("--pool", "p", "--host", "127.0.0.1", TANDEM_BIND_HOST="127.0.5.9").listen_host()
        == "127.0.0.1"
    )


def test_static_mode_flags() -> None:
    parsed = settings(
        "--static-decode", "http://10.0.0.1:8000", "--static-decode", "http://10.0.0.2:8000/",
        "--static-prefill", "http://10.0.0.3:8000", "--served-model", "m", "--connector", "nixl",
        "--mode", "Always", "--threshold", "512", "--decode-tp", "2", "--balance-policy", "prefix",
        "--admission-policy", "priority", "--max-queue", "5", "--notify-peer", "10.0.9.9:7500",
        "--stream-first-token", "--no-route-headers",
    )  # fmt: skip
    assert parsed.static is not None
    assert parsed.static.decode == ("http://10.0.0.1:8000", "http://10.0.0.2:8000")
    pool = parsed.static.pool_config(parsed.prefill_saturation)
    assert (pool.model, pool.connector, pool.routing.mode, pool.routing.threshold) == (
        "m",
        "nixl",
        "Always",
        512,
    )
    assert (pool.decode_tp, pool.routing.balance, pool.admission, pool.max_queue) == (
        2,
        "prefix",
        "priority",
        5,
    )
    assert parsed.notify_peers == ("10.0.9.9:7500",)
    assert parsed.stream_first_token and not parsed.route_headers


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pool", "p", "--static-decode", "http://a:1"], "exclude each other"),
        ([], "give --pool"),
        (["--static-decode", "http://a:1"], "needs --served-model"),
        (["--static-decode", "a:1", "--served-model", "m"], "http://HOST:PORT"),
        (["--static-decode", "http://a:1/v1", "--served-model", "m"], "http://HOST:PORT"),
        (["--pool", "p", "--notify-port", "0"], "notify_port"),
    ],
)
def test_bad_command_lines_exit_2_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["router", *argv]) == 2
    assert message in capsys.readouterr().err
