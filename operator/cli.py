"""`tandem operator`: run the InferencePool operator; `tandem operator rbac`: print its RBAC."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from tandem.operator.planning import catalog_planner
from tandem.operator.rbac import rbac_manifests
from tandem.operator.runner import run_operator
from tandem.operator.settings import DEFAULT_MAX_GPUS_PER_POOL, SettingsError, settings_from_env
from tandem.operator.yamldump import dump_all


def _run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_env(
            os.environ,
            namespaces=tuple(args.namespace) or None,
            kubeconfig=args.kubeconfig,
            bind_host=args.bind_host,
            liveness_port=args.liveness_port,
            metrics_port=args.metrics_port,
            workers=args.workers,
            max_gpus_per_pool=args.max_gpus_per_pool,
        )
    except SettingsError as exc:
        print(f"tandem operator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_operator(settings, catalog_planner(settings.max_gpus_per_pool)))
    return 0


def _rbac(args: argparse.Namespace) -> int:
    sys.stdout.write(dump_all(rbac_manifests(args.operator_namespace, args.name)))
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the InferencePool operator (all namespaces, or those given)",
        description="Reconcile InferencePools into engines, router and Services. Images come from "
        "TANDEM_IMAGE and TANDEM_VLLM_IMAGE; every flag has a TANDEM_OPERATOR_* variable too.",
    )
    parser.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeat); default: all"
    )
    parser.add_argument("--kubeconfig", type=Path, help="default: in-cluster, else $KUBECONFIG")
    parser.add_argument("--bind-host", help="address of /healthz and /metrics (default 0.0.0.0)")
    parser.add_argument("--liveness-port", type=int, help="/healthz port (default 8080; 0: off)")
    parser.add_argument("--metrics-port", type=int, help="/metrics port (default 9090; 0: off)")
    parser.add_argument("--workers", type=int, help="pools reconciled at once (default 4)")
    parser.add_argument(
        "--max-gpus-per-pool",
        type=int,
        help=f"most GPUs one pool may take (default {DEFAULT_MAX_GPUS_PER_POOL}); spec.maxGpus may lower it",
    )
    parser.set_defaults(run=_run)
    commands = parser.add_subparsers(dest="operator_command", metavar="SUBCOMMAND")
    rbac = commands.add_parser("rbac", help="print the operator RBAC: ServiceAccount, ClusterRole, binding")
    rbac.add_argument(
        "--operator-namespace", default="tandem-system", help="namespace of the operator's ServiceAccount"
    )
    rbac.add_argument("--name", default="tandem-operator", help="name of the ServiceAccount and ClusterRole")
    rbac.set_defaults(run=_rbac)
