"""Finding the control plane: a known-broken kube-apiserver is refused with the fix named (by the
devcluster, and by devcluster/envtest/assets.sh, which only passes the shared assets through)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest
from paths import REPO

from tandem.devcluster import assets
from tandem.devcluster.errors import AssetsMissingError, BrokenApiserverError

ASSETS_SCRIPT = REPO / "devcluster" / "envtest" / "assets.sh"


def assets_folder(tmp_path: Path, apiserver: bytes) -> Path:
    for name in assets.PROGRAMS:
        program = tmp_path / name
        program.write_bytes(apiserver if name == "kube-apiserver" else b"#!/bin/sh\n")
        program.chmod(0o755)
    return tmp_path


def test_sound_assets_are_found(tmp_path: Path) -> None:
    found = assets.find_assets(assets_folder(tmp_path, b"a sound apiserver"))
    assert found.kube_apiserver == tmp_path / "kube-apiserver"


def test_the_known_broken_apiserver_is_refused_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = b"the go 1.19 build"
    monkeypatch.setattr(assets, "BROKEN_APISERVER_SIZE", len(broken))
    monkeypatch.setattr(assets, "BROKEN_APISERVER_SHA256", hashlib.sha256(broken).hexdigest())
    with pytest.raises(BrokenApiserverError, match=r"update \.\./shared"):
        assets.find_assets(assets_folder(tmp_path, broken))


def test_missing_programs_are_named(tmp_path: Path) -> None:
    (tmp_path / "etcd").write_bytes(b"")
    with pytest.raises(AssetsMissingError) as error:
        assets.find_assets(tmp_path)
    assert error.value.missing == assets.PROGRAMS


def run_assets_script(tmp_path: Path, apiserver: bytes) -> subprocess.CompletedProcess[str]:
    """devcluster/envtest/assets.sh with a stand-in for ../shared/envtest/setup.sh."""
    (tmp_path / "assets").mkdir()
    folder = assets_folder(tmp_path / "assets", apiserver)
    setup = tmp_path / "setup.sh"
    setup.write_text(f"#!/bin/sh\necho {folder}\n")
    setup.chmod(0o755)
    return subprocess.run(
        ["bash", str(ASSETS_SCRIPT)],
        env={**os.environ, "TANDEM_ENVTEST_SETUP": str(setup)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_assets_script_prints_the_shared_folder_and_builds_nothing(tmp_path: Path) -> None:
    result = run_assets_script(tmp_path, b"a sound apiserver")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{tmp_path / 'assets'}\n", "")


def test_the_assets_script_refuses_the_build_the_devcluster_refuses() -> None:
    """One checksum kept in two places (the script runs before Python is set up): they must agree,
    and the script's refusal must name the fix, not a rebuild."""
    script = ASSETS_SCRIPT.read_text()
    checksum = re.search(r"^broken_apiserver=([0-9a-f]{64})$", script, re.MULTILINE)
    assert checksum is not None and checksum.group(1) == assets.BROKEN_APISERVER_SHA256
    assert "update ../shared" in script
    assert not re.search(r"apt-get|deb\.debian\.org|golang|make WHAT", script)
