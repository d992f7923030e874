"""`tandem router`: the OpenAI-compatible router in front of a pool's prefill and decode engines.

Kubernetes:  tandem router --pool NAME --namespace NS [--port 8000] [--notify-port 7500] [--kubeconfig F]
Static:      tandem router --static-decode URL [--static-prefill URL ...] --served-model MODEL ...
Environment: POD_IP (names this replica in handoff req_ids), TANDEM_BIND_HOST (what a wildcard
bind means: the devcluster runs every pod in one network namespace).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from tandem.api.spec import AdmissionPolicy, BalancePolicy, DisaggregationMode, KvConnector
from tandem.router.settings import KubernetesSettings, RouterSettings, StaticPoolSettings


def _choices(enum: type[object]) -> list[str]:
    return [str(member) for member in enum]  # type: ignore[attr-defined]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "router",
        help="run the prefill/decode router (OpenAI API)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--notify-port", type=int, default=7500, help="LMCache notification port (ZMQ PULL)")
    k8s = parser.add_argument_group("Kubernetes discovery")
    k8s.add_argument(
        "--pool", action="append", default=[], help="InferencePool to serve (repeat for several)"
    )
    k8s.add_argument("--namespace", default=None)
    k8s.add_argument("--kubeconfig", type=Path, default=None, help="default: the in-cluster service account")
    static = parser.add_argument_group("static engines (no Kubernetes)")
    static.add_argument("--static-prefill", action="append", default=[], metavar="URL")
    static.add_argument("--static-decode", action="append", default=[], metavar="URL")
    static.add_argument("--served-model", help="model id the static engines serve")
    static.add_argument("--connector", choices=_choices(KvConnector), default=KvConnector.LMCACHE.value)
    static.add_argument("--mode", choices=_choices(DisaggregationMode), default=DisaggregationMode.AUTO.value)
    static.add_argument("--threshold", type=int, default=1024, help="prompt tokens from which to hand off")
    static.add_argument(
        "--decode-tp", type=int, default=1, help="decoder TP ranks (notifications per handoff)"
    )
    static.add_argument(
        "--balance-policy", choices=_choices(BalancePolicy), default=BalancePolicy.LEAST_LOAD.value
    )
    static.add_argument(
        "--admission-policy", choices=_choices(AdmissionPolicy), default=AdmissionPolicy.FIFO.value
    )
    static.add_argument("--max-queue", type=int, default=1024)
    static.add_argument("--ttft-ms", type=float, default=2000.0)
    static.add_argument("--peer-init-port", type=int, default=7300)
    static.add_argument("--peer-alloc-port", type=int, default=7400)
    static.add_argument(
        "--decoder-buffer-chunks", type=int, default=None, help="LMCache PD buffer, in chunks"
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
    tuning.add_argument("--max-body-bytes", type=int, default=8 * 1024**2)
    tuning.add_argument("--scrape-interval", type=float, default=2.0, help="seconds; 0 turns scraping off")
    tuning.add_argument(
        "--handoff-timeout", type=float, default=30.0, help="seconds to await KV notifications"
    )
    tuning.add_argument("--retries", type=int, default=2, help="other endpoints to try before the first byte")
    tuning.add_argument("--max-inflight-per-decode", type=int, default=256)
    tuning.add_argument("--default-threshold", type=int, default=1024, help='for "auto" before a plan exists')
    tuning.add_argument(
        "--prefill-saturation", type=float, default=16.0, help="load that saturates a prefiller"
    )
    tuning.add_argument(
        "--stream-first-token", action="store_true", help="stream the first token before the KV wait"
    )
    tuning.add_argument(
        "--no-route-headers", action="store_true", help="omit x-tandem-route and endpoint headers"
    )
    tuning.add_argument(
        "--drain-timeout", type=float, default=30.0, help="seconds to finish streams on shutdown"
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
    if args.static_decode or args.static_prefill:
        static = StaticPoolSettings(
            model=args.served_model,
            prefill=tuple(args.static_prefill),
            decode=tuple(args.static_decode),
            connector=args.connector,
            mode=args.mode,
            threshold=args.threshold,
            decode_tp=args.decode_tp,
            balance=args.balance_policy,
            admission=args.admission_policy,
            max_queue=args.max_queue,
            ttft_ms=args.ttft_ms,
            peer_init_port=args.peer_init_port,
            peer_alloc_port=args.peer_alloc_port,
            decoder_buffer_chunks=args.decoder_buffer_chunks,
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
        retries=args.retries,
        max_inflight_per_decode=args.max_inflight_per_decode,
        default_threshold=args.default_threshold,
        prefill_saturation=args.prefill_saturation,
        stream_first_token=args.stream_first_token,
        route_headers=not args.no_route_headers,
        drain_timeout_s=args.drain_timeout,
    )


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

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=settings.listen_host(),
            port=settings.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            log_level=args.log_level,
            timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
            backlog=2048,
        )
    )
    server.run()
    return 0 if server.started else 1
