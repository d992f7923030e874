"""`tandem router`: the OpenAI-compatible router in front of a pool's prefill and decode engines.

Kubernetes:  tandem router --pool NAME --namespace NS [--port 8000] [--notify-port PORT] [--kubeconfig F]
Static:      tandem router --static-decode URL [--static-prefill URL ...] --served-model MODEL ...
Environment: POD_IP (names this replica in handoff req_ids), TANDEM_BIND_HOST (what a wildcard
bind means: the devcluster runs every pod in one network namespace), OTEL_* (tracing, as
OpenTelemetry defines them: docs/tracing.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from tandem.api.spec import (
    AdmissionPolicy,
    AttentionKind,
    BalancePolicy,
    DisaggregationMode,
    KvConnector,
    RouterTimeouts,
)
from tandem.api.tracing import ENDPOINT, TRACES_ENDPOINT, TracingConfigError, traces_endpoint
from tandem.router.settings import KubernetesSettings, RouterSettings, StaticPoolSettings


def _default(setting: str, of: type[RouterSettings | StaticPoolSettings] = RouterSettings) -> object:
    """A flag's default: its setting's own, so the two cannot disagree."""
    return of.model_fields[setting].default


def _number(
    group: argparse._ActionsContainer,
    flag: str,
    setting: str,
    what: str | None = None,
    of: type[RouterSettings | StaticPoolSettings] = RouterSettings,
) -> None:
    """A flag for a number setting, of the setting's type and with its default."""
    annotation = of.model_fields[setting].annotation
    kind: type[int | float]
    if annotation is int:
        kind = int
    elif annotation is float:
        kind = float
    else:
        raise TypeError(f"{of.__name__}.{setting} is not a number: {annotation}")
    group.add_argument(flag, type=kind, default=_default(setting, of), help=what)


def _choices(enum: type[object]) -> list[str]:
    return [str(member) for member in enum]  # type: ignore[attr-defined]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "router",
        help="run the prefill/decode router (OpenAI API)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=_default("host"))
    _number(parser, "--port", "port")
    parser.add_argument(
        "--notify-port",
        type=int,
        default=_default("notify_port"),
        help="KV-notification port (ZMQ PULL) for pools whose connector notifies (LMCache); "
        "Kubernetes: none without it, static: 7500 without it",
    )
    k8s = parser.add_argument_group("Kubernetes discovery")
    k8s.add_argument(
        "--pool", action="append", default=[], help="InferencePool to serve (repeat for several)"
    )
    k8s.add_argument("--namespace", default=None)
    k8s.add_argument("--kubeconfig", type=Path, default=None, help="default: the in-cluster service account")
    static = parser.add_argument_group("static engines (no Kubernetes)")

    def pool_choice(flag: str, setting: str, enum: type[object], what: str | None = None) -> None:
        default = _default(setting, StaticPoolSettings)
        static.add_argument(flag, choices=_choices(enum), default=default, help=what)

    def pool_number(flag: str, setting: str, what: str | None = None) -> None:
        _number(static, flag, setting, what, StaticPoolSettings)

    static.add_argument("--static-prefill", action="append", default=[], metavar="URL")
    static.add_argument("--static-decode", action="append", default=[], metavar="URL")
    static.add_argument("--served-model", help="model id the static engines serve")
    pool_choice("--connector", "connector", KvConnector)
    pool_choice("--mode", "mode", DisaggregationMode)
    pool_number("--threshold", "threshold", "prompt tokens from which to hand off")
    pool_number("--decode-tp", "decode_tp", "decoder TP ranks (one LMCache port pair each)")
    for role in ("prefill", "decode"):
        pool_number(
            f"--{role}-dp", f"{role}_dp", f"DP ranks behind each {role} URL (one vLLM API server over them)"
        )
    attention = "the model's attention: mla models send one notification per handoff whatever the TP"
    pool_choice("--attention", "attention", AttentionKind, attention)
    pool_choice("--balance-policy", "balance", BalancePolicy)
    pool_choice("--admission-policy", "admission", AdmissionPolicy)
    pool_number("--max-queue", "max_queue")
    for target in ("ttft", "itl"):
        setting = f"{target}_ms"
        what = f"the pool's {target.upper()} target (default {_default(setting, StaticPoolSettings):g})"
        pool_number(f"--{target}-ms", setting, what)
    pool_number("--peer-init-port", "peer_init_port")
    pool_number("--peer-alloc-port", "peer_alloc_port")
    static.add_argument(
        "--decoder-buffer-chunks", type=int, default=None, help="LMCache PD buffer, in chunks"
    )
    timeouts = RouterTimeouts()
    for flag, value, what in (
        ("--connect-timeout", timeouts.connect_seconds, "to open a connection to an engine"),
        ("--first-byte-timeout", timeouts.first_byte_seconds, "from a request to its answer's first byte"),
        ("--idle-timeout", timeouts.idle_seconds, "silence within an answer after its first byte"),
        ("--prefill-timeout", timeouts.prefill_seconds, "a handoff's prefill, request to answer"),
    ):
        static.add_argument(flag, type=float, default=value, help=f"seconds {what} (default {value:g})")
    static.add_argument(
        "--trust-client-priority",
        action="store_true",
        help="honour x-tandem-priority and x-tandem-ttft-ms from every client",
    )
    static.add_argument(
        "--notify-peer",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="another replica's notify address (forwarding target)",
    )
    tuning = parser.add_argument_group("behaviour")
    tuning.add_argument("--api-keys-file", type=Path, default=None, help="Bearer keys, one per line")
    _number(tuning, "--max-body-bytes", "max_body_bytes")
    _number(tuning, "--scrape-interval", "scrape_interval_s", "seconds; 0 turns scraping off")
    _number(tuning, "--handoff-timeout", "handoff_timeout_s", "seconds to await KV notifications")
    drain = "seconds a handoff its request left waits for its KV, to have the decoder read it"
    _number(tuning, "--handoff-drain-timeout", "handoff_drain_timeout_s", drain)
    _number(tuning, "--retries", "retries", "other endpoints to try before the first byte")
    _number(
        tuning, "--consecutive-failures", "consecutive_failures", "failures in a row that eject an endpoint"
    )
    _number(
        tuning, "--probe-interval", "probe_interval_s", "seconds: the first ejection; later ones double it"
    )
    _number(tuning, "--max-ejection", "max_ejection_s", "seconds: the longest ejection")
    _number(tuning, "--max-inflight-per-decode", "max_inflight_per_decode")
    _number(tuning, "--default-threshold", "default_threshold", 'for "auto" before a plan exists')
    _number(tuning, "--prefill-saturation", "prefill_saturation", "load that saturates a prefiller")
    tuning.add_argument(
        "--stream-first-token", action="store_true", help="stream the first token before the KV wait"
    )
    tuning.add_argument(
        "--no-route-headers", action="store_true", help="omit x-tandem-route and endpoint headers"
    )
    _number(tuning, "--drain-timeout", "drain_timeout_s", "seconds to finish streams on shutdown")
    edge = parser.add_argument_group("client edge")
    _number(edge, "--max-header-count", "max_header_count", "then 431")
    _number(edge, "--max-header-bytes", "max_header_bytes", "request line and headers")
    _number(edge, "--header-timeout", "header_timeout_s", "seconds")
    _number(edge, "--body-timeout", "body_timeout_s", "seconds")
    edge.add_argument(
        "--debug", action="store_true", help="engine URLs in answer headers and per-endpoint metric labels"
    )
    tuning.add_argument(
        "--otlp-traces-endpoint",
        metavar="URL",
        help=f"OTLP/HTTP traces URL (else ${TRACES_ENDPOINT} or ${ENDPOINT}): trace requests",
    )
    tuning.add_argument("--log-level", default="info")
    parser.set_defaults(run=_run)


class UsageError(ValueError):
    """The command line combines flags that do not go together."""


def settings_from_args(args: argparse.Namespace, environ: dict[str, str]) -> RouterSettings:
    """Raises UsageError or pydantic's ValidationError."""
    kubernetes = static = None
    if args.pool and (args.static_decode or args.static_prefill):
        raise UsageError("--pool (Kubernetes discovery) and --static-* engines exclude each other")
    if not args.pool and not args.static_decode:
        raise UsageError("give --pool NAME (Kubernetes) or at least one --static-decode URL")
    if args.static_decode and not args.served_model:
        raise UsageError("--static-decode needs --served-model: the model id the engines serve")
    if args.pool:
        kubernetes = KubernetesSettings(
            namespace=args.namespace or "default", pools=tuple(args.pool), kubeconfig=args.kubeconfig
        )
    if args.trust_client_priority and args.pool:
        raise UsageError(
            "--trust-client-priority is for static engines; a pool sets spec.router.trustClientPriority"
        )
    if args.static_decode or args.static_prefill:
        static = StaticPoolSettings(
            model=args.served_model,
            prefill=tuple(args.static_prefill),
            decode=tuple(args.static_decode),
            connector=args.connector,
            mode=args.mode,
            threshold=args.threshold,
            decode_tp=args.decode_tp,
            prefill_dp=args.prefill_dp,
            decode_dp=args.decode_dp,
            attention=args.attention,
            balance=args.balance_policy,
            admission=args.admission_policy,
            max_queue=args.max_queue,
            ttft_ms=args.ttft_ms,
            itl_ms=args.itl_ms,
            peer_init_port=args.peer_init_port,
            peer_alloc_port=args.peer_alloc_port,
            decoder_buffer_chunks=args.decoder_buffer_chunks,
            trust_client_priority=args.trust_client_priority,
            timeouts=RouterTimeouts(
                connect_seconds=args.connect_timeout,
                first_byte_seconds=args.first_byte_timeout,
                idle_seconds=args.idle_timeout,
                prefill_seconds=args.prefill_timeout,
            ),
        )
    return RouterSettings(
        host=args.host,
        port=args.port,
        notify_port=args.notify_port,
        bind_host=environ.get("TANDEM_BIND_HOST") or None,
        pod_ip=environ.get("POD_IP") or None,
        kubernetes=kubernetes,
        static=static,
        notify_peers=tuple(args.notify_peer),
        api_keys_file=args.api_keys_file,
        max_body_bytes=args.max_body_bytes,
        scrape_interval_s=args.scrape_interval,
        handoff_timeout_s=args.handoff_timeout,
        handoff_drain_timeout_s=args.handoff_drain_timeout,
        retries=args.retries,
        consecutive_failures=args.consecutive_failures,
        probe_interval_s=args.probe_interval,
        max_ejection_s=args.max_ejection,
        max_inflight_per_decode=args.max_inflight_per_decode,
        default_threshold=args.default_threshold,
        prefill_saturation=args.prefill_saturation,
        stream_first_token=args.stream_first_token,
        route_headers=not args.no_route_headers,
        drain_timeout_s=args.drain_timeout,
        max_header_count=args.max_header_count,
        max_header_bytes=args.max_header_bytes,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        debug=args.debug,
        otlp_traces_endpoint=_traces_endpoint(args.otlp_traces_endpoint, environ),
    )


def _traces_endpoint(given: str | None, environ: dict[str, str]) -> str | None:
    try:
        return traces_endpoint(given, environ)
    except TracingConfigError as exc:
        raise UsageError(str(exc)) from exc


def _run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args, dict(os.environ))
    except (UsageError, ValidationError) as exc:
        print(f"tandem router: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import uvicorn

    from tandem.router.app import create_app
    from tandem.router.server import server_config

    server = uvicorn.Server(server_config(create_app(settings), settings, log_level=args.log_level))
    server.run()
    return 0 if server.started else 1
