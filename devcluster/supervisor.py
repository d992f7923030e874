"""The cluster process: control plane and node in one asyncio program, until told to stop.

``python -m tandem.devcluster.supervisor --settings FILE [--watch-stdin]`` prints one JSON line
(``ClusterInfo``) on stdout once the cluster is ready. It stops, stopping every process it
started, on SIGTERM, SIGINT or SIGHUP and, with ``--watch-stdin``, when its stdin reaches end of
file: ``DevCluster`` holds the other end of that pipe, so the cluster cannot outlive its owner even
when the owner is killed. As a last resort every child's process group is killed on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from tandem.devcluster.assets import find_assets
from tandem.devcluster.containers import check_runtime
from tandem.devcluster.controlplane import control_plane
from tandem.devcluster.errors import DevClusterError
from tandem.devcluster.network import claim_slot
from tandem.devcluster.node import node_agent
from tandem.devcluster.processes import kill_children
from tandem.devcluster.settings import ClusterInfo, DevClusterSettings


async def run_cluster(settings: DevClusterSettings, on_ready: Callable[[ClusterInfo], None]) -> None:
    """Start the cluster, report it ready, and run it until cancelled (then stop it all)."""
    assets = find_assets(settings.assets)
    check_runtime()
    slot, slot_lock = claim_slot()
    try:
        async with (
            control_plane(assets, settings.work_dir / "control-plane", slot) as access,
            node_agent(access, settings.work_dir, settings.node, slot),
        ):
            on_ready(
                ClusterInfo(
                    pid=os.getpid(),
                    server=access.server,
                    token=access.token,
                    kubeconfig=access.kubeconfig,
                    ca_cert=access.ca_cert,
                    work_dir=settings.work_dir,
                    service_cidr=slot.service_cidr,
                )
            )
            await asyncio.Event().wait()
    finally:
        os.close(slot_lock)


async def _serve(
    settings: DevClusterSettings, on_ready: Callable[[ClusterInfo], None], watch_stdin: bool
) -> int:
    loop = asyncio.get_running_loop()
    cluster = asyncio.create_task(run_cluster(settings, on_ready))
    stopping = False

    def stop() -> None:
        nonlocal stopping
        if not stopping:  # a second signal must not cut the orderly stop short
            stopping = True
            cluster.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, stop)
    if watch_stdin:

        def on_stdin() -> None:
            if not os.read(sys.stdin.fileno(), 4096):
                loop.remove_reader(sys.stdin.fileno())
                stop()

        loop.add_reader(sys.stdin.fileno(), on_stdin)
    try:
        await cluster
    except asyncio.CancelledError:
        return 0
    except DevClusterError as exc:
        print(f"devcluster: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def serve(
    settings: DevClusterSettings, on_ready: Callable[[ClusterInfo], None], watch_stdin: bool = False
) -> int:
    """Run the cluster in this process until a signal (or stdin's end); the exit status."""
    try:
        return asyncio.run(_serve(settings, on_ready, watch_stdin))
    finally:
        kill_children()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tandem.devcluster.supervisor")
    parser.add_argument("--settings", type=Path, required=True, help="DevClusterSettings as JSON")
    parser.add_argument("--watch-stdin", action="store_true", help="stop when stdin reaches end of file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = DevClusterSettings.model_validate_json(args.settings.read_text())

    def report(info: ClusterInfo) -> None:
        sys.stdout.write(info.model_dump_json() + "\n")
        sys.stdout.flush()

    return serve(settings, report, watch_stdin=args.watch_stdin)


if __name__ == "__main__":
    sys.exit(main())
