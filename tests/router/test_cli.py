"""`tandem router`'s command line: flags and environment into settings, bad combinations refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tandem.api.spec import RouterTimeouts
from tandem.cli import build_parser, main
from tandem.router.cli import UsageError, settings_from_args
from tandem.router.engine_http import Timeouts
from tandem.router.outlier import EjectionPolicy
from tandem.router.settings import RouterSettings, StaticPoolSettings


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
    bound = settings("--pool", "p", "--notify-port", "7500", TANDEM_BIND_HOST="127.0.5.9")
    assert bound.replica_id() == "127.0.5.9:7500"
    assert (
        settings("--pool", "p", "--host", "127.0.0.1", TANDEM_BIND_HOST="127.0.5.9").listen_host()
        == "127.0.0.1"
    )


STATIC = ("--static-decode", "http://a:1", "--served-model", "m")


@pytest.mark.parametrize(
    ("argv", "port"),
    [
        (["--pool", "p"], None),  # the operator gives --notify-port only where a pool's connector notifies
        (["--pool", "p", "--notify-port", "7600"], 7600),
        ([*STATIC], 7500),  # LMCache by default: LmcacheOptions' proxy port
        ([*STATIC, "--notify-port", "7600"], 7600),
        ([*STATIC, "--connector", "nixl", "--notify-port", "7600"], None),  # NIXL sends no notifications
        ([*STATIC, "--mode", "Never", "--connector", "none"], None),
    ],
)
def test_the_notification_port_opens_only_for_a_connector_that_notifies(
    argv: list[str], port: int | None
) -> None:
    parsed = settings(*argv, POD_IP="10.1.2.3")
    assert parsed.notify_listen_port() == port
    assert parsed.replica_id() == f"10.1.2.3:{port or 0}"


def test_static_mode_flags() -> None:
    parsed = settings(
        "--static-decode", "http://10.0.0.1:8000", "--static-decode", "http://10.0.0.2:8000/",
        "--static-prefill", "http://10.0.0.3:8000", "--served-model", "m", "--connector", "nixl",
        "--mode", "Always", "--threshold", "512", "--decode-tp", "2", "--decode-dp", "4",
        "--attention", "mla",
        "--balance-policy", "prefix", "--handoff-drain-timeout", "60",
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
    assert (pool.prefill_dp, pool.decode_dp) == (1, 4)
    assert (pool.decode_tp, pool.routing.balance, pool.admission, pool.max_queue) == (
        2,
        "prefix",
        "priority",
        5,
    )
    assert pool.kv_notifications == 0  # NIXL: the decoder pulls, nobody notifies the router
    assert parsed.handoff_drain_timeout_s == 60
    assert parsed.notify_peers == ("10.0.9.9:7500",)
    assert parsed.stream_first_token and not parsed.route_headers


@pytest.mark.parametrize(("attention", "notifications"), [("mla", 1), ("gqa", 2)])
def test_static_lmcache_pools_await_a_notification_per_sending_rank(
    attention: str, notifications: int
) -> None:
    """LMCache: every TP rank sends its share of the KV and a ProxyNotif; MLA's first rank alone."""
    parsed = settings(
        "--static-decode", "http://10.0.0.1:8000", "--served-model", "m", "--decode-tp", "2",
        "--attention", attention,
    )  # fmt: skip
    assert parsed.static is not None
    assert parsed.static.pool_config(parsed.prefill_saturation).kv_notifications == notifications


def test_static_connector_none_needs_mode_never() -> None:
    base = ("--static-decode", "http://10.0.0.1:8000", "--served-model", "m", "--connector", "none")
    parsed = settings(*base, "--mode", "Never")
    assert parsed.static is not None
    assert parsed.static.pool_config(parsed.prefill_saturation).connector == "none"
    with pytest.raises(ValidationError, match="needs mode Never"):
        settings(*base)


def test_edge_flags_and_their_defaults() -> None:
    default = settings("--pool", "p")
    assert (default.max_header_count, default.max_header_bytes) == (100, 32 * 1024)
    assert (default.header_timeout_s, default.body_timeout_s, default.debug) == (10, 60, False)
    parsed = settings("--pool", "p", "--max-header-count", "20", "--max-header-bytes", "4096",
                      "--header-timeout", "2.5", "--body-timeout", "7", "--debug")  # fmt: skip
    assert (parsed.max_header_count, parsed.max_header_bytes) == (20, 4096)
    assert (parsed.header_timeout_s, parsed.body_timeout_s, parsed.debug) == (2.5, 7, True)


def test_static_pools_may_trust_their_clients() -> None:
    static = ["--static-decode", "http://a:1", "--served-model", "m"]
    assert settings(*static).static.pool_config(1).trust_client_priority is False  # type: ignore[union-attr]
    trusted = settings(*static, "--trust-client-priority").static
    assert trusted is not None and trusted.pool_config(1).trust_client_priority


def test_timeout_and_ejection_flags() -> None:
    parsed = settings(
        "--static-decode", "http://10.0.0.1:8000", "--served-model", "m", "--connect-timeout", "1",
        "--first-byte-timeout", "40", "--idle-timeout", "20", "--prefill-timeout", "15",
        "--consecutive-failures", "2", "--probe-interval", "0.5", "--max-ejection", "30",
    )  # fmt: skip
    assert parsed.static is not None
    pool = parsed.static.pool_config(parsed.prefill_saturation)
    assert pool.engine_timeouts == Timeouts(connect_s=1, first_byte_s=40, idle_s=20)
    assert pool.prefill_timeouts == Timeouts(connect_s=1, first_byte_s=15, idle_s=20)
    assert parsed.ejection() == EjectionPolicy(consecutive_failures=2, base_s=0.5, max_s=30)


def test_timeout_defaults_are_the_apis() -> None:
    parsed = settings("--static-decode", "http://10.0.0.1:8000", "--served-model", "m")
    assert parsed.static is not None and parsed.static.timeouts == RouterTimeouts()
    assert parsed.ejection() == RouterSettings(static=parsed.static).ejection()


def test_flags_left_out_are_the_settings_defaults() -> None:
    parsed = settings("--static-decode", "http://10.0.0.1:8000", "--served-model", "m")
    assert parsed == RouterSettings(static=StaticPoolSettings(model="m", decode=("http://10.0.0.1:8000",)))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pool", "p", "--trust-client-priority"], "spec.router.trustClientPriority"),
        (["--pool", "p", "--header-timeout", "0"], "header_timeout_s"),
        (["--static-decode", "http://a:1", "--served-model", "m", "--idle-timeout", "0"], "idle_seconds"),
        (["--pool", "p", "--consecutive-failures", "0"], "consecutive_failures"),
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


def test_tracing_is_off_unless_an_endpoint_is_given_and_only_over_http() -> None:
    url = "http://collector:4318/v1/traces"
    argv = ["router", "--static-decode", "http://127.0.0.1:8001", "--served-model", "m"]
    untraced = build_parser("router").parse_args(argv)
    assert settings_from_args(untraced, {}).otlp_traces_endpoint is None
    assert settings_from_args(untraced, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == (
        settings_from_args(build_parser("router").parse_args([*argv, "--otlp-traces-endpoint", url]), {})
    )
    with pytest.raises(UsageError, match="grpc"):
        settings_from_args(
            untraced, {"OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}
        )
