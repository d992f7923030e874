"""`tandem devcluster up|down`: run a devcluster in the foreground, or stop the one running.

``up`` prints the admin kubeconfig's path once the cluster is ready and runs until Ctrl-C or
SIGTERM (or ``tandem devcluster down``); ``--kubeconfig-out`` also copies the kubeconfig there.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from tandem.devcluster import state
from tandem.devcluster.assets import find_assets
from tandem.devcluster.errors import AssetsMissingError
from tandem.devcluster.settings import ClusterInfo, DevClusterSettings, NodeSettings


def _label(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _up(args: argparse.Namespace) -> int:
    state_dir: Path = args.state_dir
    running = state.read(state_dir)
    if running is not None and state.is_alive(running):
        print(
            f"a devcluster is already running (pid {running.pid}, kubeconfig {running.kubeconfig}); "
            "stop it with `tandem devcluster down`",
            file=sys.stderr,
        )
        return 1
    try:
        assets = find_assets(args.assets)
    except AssetsMissingError as exc:
        print(f"tandem devcluster: {exc}", file=sys.stderr)
        return 2
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="tandem-devcluster-"))
    node = NodeSettings(gpus=args.gpus, labels=dict(args.node_label))
    settings = DevClusterSettings(work_dir=work_dir, assets=assets.etcd.parent, node=node)

    def ready(info: ClusterInfo) -> None:
        kubeconfig = info.kubeconfig
        if args.kubeconfig_out is not None:
            shutil.copyfile(info.kubeconfig, args.kubeconfig_out)
            args.kubeconfig_out.chmod(0o600)
            kubeconfig = args.kubeconfig_out
        start_time = state.process_start_time(info.pid)
        assert start_time is not None  # this very process
        record = state.RunningCluster(
            pid=info.pid, start_time=start_time, server=info.server, kubeconfig=kubeconfig, work_dir=work_dir
        )
        state.write(state_dir, record)
        print(kubeconfig, flush=True)

    # Imported here: it loads the Kubernetes client, and building `tandem`'s parser must stay quick.
    from tandem.devcluster.supervisor import serve

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return serve(settings, ready)
    finally:
        state.remove(state_dir)
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)


def _down(args: argparse.Namespace) -> int:
    running = state.read(args.state_dir)
    if running is None or not state.is_alive(running):
        state.remove(args.state_dir)
        print("no devcluster is running", file=sys.stderr)
        return 0
    os.kill(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while state.is_alive(running) and time.monotonic() < deadline:
        time.sleep(0.1)
    if state.is_alive(running):
        # Its children die with it (parent-death signal), so SIGKILL still leaves nothing behind.
        os.kill(running.pid, signal.SIGKILL)
        print(f"devcluster (pid {running.pid}) did not stop in {args.timeout:g}s: killed", file=sys.stderr)
    state.remove(args.state_dir)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "devcluster", help="a local Kubernetes (real control plane, pods as local processes)"
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="start a devcluster; print its kubeconfig path; run until Ctrl-C")
    up.add_argument(
        "--assets",
        type=Path,
        help="etcd/kube-apiserver/kube-controller-manager folder (default $KUBEBUILDER_ASSETS)",
    )
    up.add_argument("--work-dir", type=Path, help="keep state and logs here (default: a temporary folder)")
    up.add_argument("--kubeconfig-out", type=Path, help="also write the admin kubeconfig to this path")
    up.add_argument("--gpus", type=int, default=8, help="allocatable nvidia.com/gpu of the node (default 8)")
    up.add_argument(
        "--node-label",
        type=_label,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra node label (repeatable), for pods' nodeSelectors",
    )
    up.set_defaults(run=_up)
    down = actions.add_parser("down", help="stop the devcluster that `up` started")
    down.add_argument("--timeout", type=float, default=60.0, help="seconds to wait before SIGKILL")
    down.set_defaults(run=_down)
    for action in (up, down):
        action.add_argument(
            "--state-dir",
            type=Path,
            default=state.default_state_dir(),
            help="where `up` records the running cluster (default %(default)s)",
        )
