"""The first program of every pod process: shape the private mount namespace, then exec the container.

The kubelet starts ``unshare --mount --uts --propagation private -- python -m
tandem.devcluster.podinit <launch.json>``. This sets the hostname, links ``/etc/hosts`` to the
pod's hosts file, makes every volume appear at its mount path (see ``mountns``), changes to the
working folder and, for a pod that runs as another user, opens the way to the files the container's
program needs (its image's files and the hosts file: ``MountNamespace.pass_through``). Then it takes
the pod's ids, as a container runtime does: supplementary groups (``fsGroup`` and
``supplementalGroups``), ``runAsGroup``, ``runAsUser``; and execs the program. The pid stays the one
the kubelet started, so signals and exit statuses are the container's own.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from tandem.devcluster.launch import ContainerLaunch
from tandem.devcluster.mountns import MountError, MountNamespace, bind, blocked_on_the_way

# Exit statuses of a container runtime that could not start the program (as runc reports them).
EXIT_SETUP_FAILED = 126
EXIT_NOT_FOUND = 127


@contextlib.contextmanager
def _checking_as(launch: ContainerLaunch) -> Iterator[None]:
    """Permission checks (``os.access(..., effective_ids=True)``) as the container's user meanwhile."""
    os.setgroups(launch.supplemental_groups)
    os.setegid(launch.run_as_group if launch.run_as_group is not None else os.getgid())
    os.seteuid(launch.run_as_user if launch.run_as_user is not None else os.getuid())
    try:
        yield
    finally:
        os.seteuid(os.getuid())
        os.setegid(os.getgid())


def _passable(folder: Path) -> bool:
    return os.access(folder, os.X_OK, effective_ids=True)


def _open_the_way(launch: ContainerLaunch, namespace: MountNamespace) -> None:
    """Let the container's user reach its image's files and the hosts file (not the host's other files)."""
    wanted = [Path(path) for path in launch.image_files]
    with _checking_as(launch):
        blocked = blocked_on_the_way([*wanted, Path(launch.hosts_file).parent], _passable)
    namespace.pass_through(blocked)
    with _checking_as(launch):
        unreadable = [path for path in wanted if not os.access(path, os.R_OK | os.X_OK, effective_ids=True)]
    if unreadable:
        raise PermissionError(
            f"uid {launch.run_as_user} cannot read {', '.join(map(str, unreadable))}, which the container's "
            "program needs: the devcluster opens the way to them, but they must be readable by all"
        )


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
    if launch.run_as_user:
        _open_the_way(launch, namespace)
    os.setgroups(launch.supplemental_groups)
    if launch.run_as_group is not None:
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
