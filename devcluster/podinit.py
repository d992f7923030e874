"""The first program of every pod process: shape the private mount namespace, then exec the container.

The kubelet starts ``unshare --mount --uts --propagation private -- python -m
tandem.devcluster.podinit <launch.json>``. This sets the hostname, links ``/etc/hosts`` to the
pod's hosts file, makes every volume appear at its mount path (see ``mountns``), changes to the
working folder, drops to ``runAsUser``/``runAsGroup`` when the pod asks, and execs the program; the
pid stays the one the kubelet started, so signals and exit statuses are the container's own.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from tandem.devcluster.launch import ContainerLaunch
from tandem.devcluster.mountns import MountError, MountNamespace, bind

# Exit statuses of a container runtime that could not start the program (as runc reports them).
EXIT_SETUP_FAILED = 126
EXIT_NOT_FOUND = 127


def prepare(launch: ContainerLaunch) -> None:
    """Apply hostname, hosts file, mounts, working folder and user ids to this process."""
    socket.sethostname(launch.hostname)
    namespace = MountNamespace(Path(launch.scratch))
    namespace.mirror(Path("/etc"), links={"hosts": launch.hosts_file})
    for mount in launch.mounts:
        source = Path(mount.source)
        target = namespace.ensure(Path(mount.target), directory=source.is_dir())
        bind(source, target, read_only=mount.read_only)
    namespace.ensure(Path(launch.working_dir), directory=True)
    os.chdir(launch.working_dir)
    if launch.run_as_group is not None:
        os.setgroups([])
        os.setgid(launch.run_as_group)
    if launch.run_as_user is not None:
        os.setuid(launch.run_as_user)


def main(argv: list[str]) -> int:
    launch = ContainerLaunch.model_validate_json(Path(argv[1]).read_text())
    try:
        prepare(launch)
    except (MountError, OSError) as exc:
        print(f"devcluster podinit: cannot set up the container: {exc}", file=sys.stderr, flush=True)
        return EXIT_SETUP_FAILED
    try:
        os.execve(launch.argv[0], launch.argv, launch.env)
    except OSError as exc:
        print(f"devcluster podinit: cannot run {launch.argv[0]}: {exc}", file=sys.stderr, flush=True)
    return EXIT_NOT_FOUND


if __name__ == "__main__":
    sys.exit(main(sys.argv))
