"""`tandem devcluster up` / `down` from the shell, and the guarantee that no cluster process outlives
its owner, even one killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from kubernetes import client

from tandem.devcluster.assets import ASSETS_ENV, missing_programs
from tandem.devcluster.cluster import read_line
from tandem.devcluster.testing import ExistingCluster

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get(ASSETS_ENV) or bool(missing_programs(Path(os.environ[ASSETS_ENV]))),
        reason=f"{ASSETS_ENV} lacks the control plane (etcd, kube-apiserver, kube-controller-manager)",
    ),
]

TANDEM = [sys.executable, "-m", "tandem.cli"]


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (the cluster's work folder names them all)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_until_gone(text: str, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_up_serves_a_cluster_until_down_stops_it_all(tmp_path: Path) -> None:
    state_dir, work_dir, kubeconfig = tmp_path / "state", tmp_path / "work", tmp_path / "kubeconfig"
    up = subprocess.Popen(
        [
            *(*TANDEM, "devcluster", "up", "--state-dir", str(state_dir), "--work-dir", str(work_dir)),
            *("--kubeconfig-out", str(kubeconfig), "--node-label", "tandem.dev/pool=test"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert up.stdout is not None
        printed = read_line(up.stdout.fileno(), timeout=120).decode().strip()
        assert printed == str(kubeconfig), up.stderr.read().decode() if up.stderr else ""
        with ExistingCluster(kubeconfig).api_client() as api:
            [node] = client.CoreV1Api(api).list_node().items
        assert node.metadata is not None and (node.metadata.labels or {})["tandem.dev/pool"] == "test"
        assert processes_mentioning(str(work_dir))

        again = subprocess.run(
            [*TANDEM, "devcluster", "up", "--state-dir", str(state_dir)], capture_output=True, text=True
        )
        assert again.returncode == 1
        assert "already running" in again.stderr

        down = subprocess.run(
            [*TANDEM, "devcluster", "down", "--state-dir", str(state_dir)], capture_output=True, timeout=90
        )
        assert down.returncode == 0
        assert up.wait(timeout=30) == 0
        assert not wait_until_gone(str(work_dir), timeout=10)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for stream in (up.stdout, up.stderr):
            if stream is not None:
                stream.close()
    nothing = subprocess.run(
        [*TANDEM, "devcluster", "down", "--state-dir", str(state_dir)], capture_output=True, text=True
    )
    assert nothing.returncode == 0
    assert "no devcluster is running" in nothing.stderr


OWNER = textwrap.dedent(
    """
    import sys, time
    from tandem.devcluster import DevCluster
    cluster = DevCluster(work_dir=sys.argv[1]).start()
    print("ready", flush=True)
    time.sleep(600)
    """
)


def test_cluster_stops_when_its_owner_is_killed(tmp_path: Path) -> None:
    work_dir = tmp_path / "owned"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(work_dir)], stdout=subprocess.PIPE)
    try:
        assert owner.stdout is not None
        assert read_line(owner.stdout.fileno(), timeout=120) == b"ready\n"
        assert processes_mentioning(str(work_dir))
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert not wait_until_gone(str(work_dir), timeout=60)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout is not None:
            owner.stdout.close()
