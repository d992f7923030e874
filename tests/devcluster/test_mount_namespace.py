"""A container's private mount namespace: volumes at paths the host lacks, a private /etc/hosts
that follows rewrites, and the host's filesystem left exactly as it was."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tandem.devcluster.containers import container_argv, write_launch
from tandem.devcluster.dns import write_atomically
from tandem.devcluster.images import installation_folders
from tandem.devcluster.launch import ContainerLaunch, MountSpec
from tandem.devcluster.podinit import EXIT_SETUP_FAILED

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="mount namespaces need root and unshare"
)

# Paths the host must not have, before or after.
FILE_TARGET = "/etc/tandem-mountns-test/config.yaml"
ROOT_TARGET = "/tandem-mountns-test/models"
SYMLINKED_TARGET = "/var/run/secrets/tandem-mountns-test"

PROGRAM = textwrap.dedent(
    f"""
    import errno, socket, time
    print("config", open("{FILE_TARGET}").read(), flush=True)
    print("models", open("{ROOT_TARGET}/weights.bin").read(), flush=True)
    print("secret", open("{SYMLINKED_TARGET}/token").read(), flush=True)
    print("hostname", socket.gethostname(), flush=True)
    try:
        open("{FILE_TARGET}", "w")
    except OSError as exc:
        print("read-only", exc.errno == errno.EROFS, flush=True)
    open("/etc/tandem-mountns-test/scratch", "w").write("private")
    print("hosts", "first" in open("/etc/hosts").read(), flush=True)
    deadline = time.monotonic() + 10
    while "second" not in open("/etc/hosts").read() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("hosts rewritten", "second" in open("/etc/hosts").read(), flush=True)
    """
)


def host_untouched() -> bool:
    return not any(
        Path(path).exists()
        for path in ("/etc/tandem-mountns-test", "/tandem-mountns-test", "/run/secrets/tandem-mountns-test")
    )


def launch_command(launch: ContainerLaunch, directory: Path) -> list[str]:
    """The command line the kubelet starts a container with."""
    launch_file = directory / "launch.json"
    write_launch(launch, launch_file)
    return container_argv(launch_file)


def test_volumes_appear_at_missing_paths_without_changing_the_host(tmp_path: Path) -> None:
    if not host_untouched():
        pytest.skip("this machine already has one of the test's paths")
    config = tmp_path / "config.yaml"
    config.write_text("chunk_size: 256")
    models = tmp_path / "models"
    models.mkdir()
    (models / "weights.bin").write_text("weights")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "token").write_text("t0ken")
    (tmp_path / "network").mkdir()
    hosts = tmp_path / "network" / "hosts"  # in its own folder, as the kubelet keeps it
    write_atomically(hosts, "127.0.0.1 localhost first\n")
    original_hosts = Path("/etc/hosts").read_text()
    launch = ContainerLaunch(
        argv=[sys.executable, "-c", PROGRAM],
        env={"PATH": os.environ["PATH"]},
        working_dir=str(tmp_path / "work"),
        hostname="decode-0",
        hosts_file=str(hosts),
        scratch=str(tmp_path / "scratch"),
        mounts=[
            MountSpec(source=str(config), target=FILE_TARGET, read_only=True),
            MountSpec(source=str(models), target=ROOT_TARGET),
            MountSpec(source=str(secret), target=SYMLINKED_TARGET, read_only=True),
        ],
    )
    process = subprocess.Popen(launch_command(launch, tmp_path), stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines = [process.stdout.readline().strip() for _ in range(6)]
    write_atomically(hosts, "127.0.0.1 localhost second\n")
    lines.append(process.stdout.readline().strip())
    assert process.wait(timeout=30) == 0
    process.stdout.close()

    assert lines == [
        "config chunk_size: 256",
        "models weights",
        "secret t0ken",
        "hostname decode-0",
        "read-only True",
        "hosts True",
        "hosts rewritten True",
    ]
    assert host_untouched()
    assert Path("/etc/hosts").read_text() == original_hosts


def test_unmountable_volume_fails_with_a_message(tmp_path: Path) -> None:
    launch = ContainerLaunch(
        argv=["/bin/true"],
        env={},
        working_dir=str(tmp_path),
        hostname="broken",
        hosts_file=str(tmp_path / "hosts"),
        scratch=str(tmp_path / "scratch"),
        mounts=[MountSpec(source=str(tmp_path / "absent"), target=str(tmp_path / "target"))],
    )
    (tmp_path / "hosts").write_text("")
    result = subprocess.run(launch_command(launch, tmp_path), capture_output=True, text=True, timeout=30)
    assert result.returncode == EXIT_SETUP_FAILED
    assert "cannot set up the container" in result.stderr


# As the operator's pods ask (operator/settings.py IMAGE_UID), on a host whose Python and project
# may lie in folders that uid cannot pass (/root is 0700; pytest's tmp_path is under a 0700 folder).
POD_UID = 65532

REPORT_AS_USER = textwrap.dedent(
    """
    import os, sys
    print("ids", os.getuid(), os.getgid(), sorted(os.getgroups()), flush=True)
    image = sys.argv[1]
    print("image", open(os.path.join(image, "lib.txt")).read(), flush=True)
    home = os.path.dirname(image)
    for attempt in (lambda: os.listdir(home), lambda: open(os.path.join(home, "private.txt"))):
        try:
            attempt()
            print("home open", flush=True)
        except OSError as exc:
            print("home closed", exc.errno, flush=True)
    print("hosts", open("/etc/hosts").read().strip(), flush=True)
    """
)


def private_home(tmp_path: Path) -> Path:
    """A folder only root may pass (like /root) holding an image folder readable by all."""
    home = tmp_path / "home"
    (home / "image").mkdir(parents=True)
    (home / "image" / "lib.txt").write_text("library")
    (home / "private.txt").write_text("not for pods")
    home.chmod(0o700)
    return home


def test_a_pod_user_reaches_its_image_files_and_nothing_beside_them(tmp_path: Path) -> None:
    """The bug: the kubelet dropped to runAsUser, and the interpreter under /root (0700) could not be
    executed (`Permission denied: .../bin/python3`)."""
    home = private_home(tmp_path)
    (tmp_path / "network").mkdir()
    hosts = tmp_path / "network" / "hosts"
    write_atomically(hosts, "127.0.0.1 localhost pod\n")
    launch = ContainerLaunch(
        argv=[sys.executable, "-c", REPORT_AS_USER, str(home / "image")],
        env={"PATH": os.environ["PATH"]},
        working_dir=str(tmp_path / "work"),
        hostname="engine",
        hosts_file=str(hosts),
        scratch=str(tmp_path / "scratch"),
        image_files=[*installation_folders(), str(home / "image")],
        run_as_user=POD_UID,
        run_as_group=POD_UID,
        supplemental_groups=[POD_UID],
    )
    result = subprocess.run(launch_command(launch, tmp_path), capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"ids {POD_UID} {POD_UID} [{POD_UID}]",
        "image library",
        f"home closed {errno.EACCES}",  # the folder on the way can be passed, not listed
        f"home closed {errno.ENOENT}",  # and holds nothing but the way
        "hosts 127.0.0.1 localhost pod",
    ]
    assert home.stat().st_mode & 0o777 == 0o700  # the host's folder is as it was
    assert sorted(path.name for path in home.iterdir()) == ["image", "private.txt"]


def test_image_files_the_user_cannot_read_fail_with_a_message(tmp_path: Path) -> None:
    home = private_home(tmp_path)
    (home / "image").chmod(0o700)
    (tmp_path / "hosts").write_text("")
    launch = ContainerLaunch(
        argv=["/bin/true"],
        env={},
        working_dir=str(tmp_path / "work"),
        hostname="engine",
        hosts_file=str(tmp_path / "hosts"),
        scratch=str(tmp_path / "scratch"),
        image_files=[str(home / "image")],
        run_as_user=POD_UID,
    )
    result = subprocess.run(launch_command(launch, tmp_path), capture_output=True, text=True, timeout=30)
    assert result.returncode == EXIT_SETUP_FAILED
    assert f"uid {POD_UID} cannot read {home / 'image'}" in result.stderr
