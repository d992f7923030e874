"""Finding the control plane: a known-broken kube-apiserver is refused with the fix named."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tandem.devcluster import assets
from tandem.devcluster.errors import AssetsMissingError, BrokenApiserverError


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
    with pytest.raises(BrokenApiserverError, match=r"devcluster/envtest/assets\.sh"):
        assets.find_assets(assets_folder(tmp_path, broken))


def test_missing_programs_are_named(tmp_path: Path) -> None:
    (tmp_path / "etcd").write_bytes(b"")
    with pytest.raises(AssetsMissingError) as error:
        assets.find_assets(tmp_path)
    assert error.value.missing == assets.PROGRAMS
