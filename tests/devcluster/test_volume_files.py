"""Volume contents as the kubelet lays them out: selected keys, atomic ``..data`` swaps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kubernetes_asyncio.client import V1KeyToPath

from tandem.devcluster.volumes import VolumeError, key_files, write_atomically

FS_GROUP = 4242


def test_all_keys_or_the_selected_items() -> None:
    data = {"a": b"1", "b": b"2"}
    assert key_files("configmap", "cfg", data, None, 0o644, optional=False) == {
        "a": (b"1", 0o644),
        "b": (b"2", 0o644),
    }
    items = [V1KeyToPath(key="b", path="conf/b.yaml", mode=0o600)]
    assert key_files("configmap", "cfg", data, items, 0o644, optional=False) == {"conf/b.yaml": (b"2", 0o600)}


def test_missing_object_or_key_stops_the_volume_unless_optional() -> None:
    with pytest.raises(VolumeError, match='secret "creds" not found'):
        key_files("secret", "creds", None, None, 0o644, optional=False)
    assert key_files("secret", "creds", None, None, 0o644, optional=True) == {}
    items = [V1KeyToPath(key="absent", path="x")]
    with pytest.raises(VolumeError, match="no key 'absent'"):
        key_files("configmap", "cfg", {}, items, 0o644, optional=False)


def test_item_paths_may_not_escape_the_volume() -> None:
    with pytest.raises(VolumeError, match="must be relative"):
        key_files("configmap", "cfg", {"a": b""}, [V1KeyToPath(key="a", path="../etc/passwd")], 0o644, False)


def test_updates_swap_the_data_link_and_drop_stale_keys(tmp_path: Path) -> None:
    volume = tmp_path / "vol"
    assert write_atomically(volume, {"config.yaml": (b"v1", 0o644), "old": (b"x", 0o644)})
    held = (volume / "config.yaml").resolve()
    assert not write_atomically(volume, {"config.yaml": (b"v1", 0o644), "old": (b"x", 0o644)})

    assert write_atomically(volume, {"config.yaml": (b"v2", 0o644), "nested/deep": (b"d", 0o600)})
    assert (volume / "config.yaml").read_bytes() == b"v2"
    assert (volume / "nested" / "deep").read_bytes() == b"d"
    assert ((volume / "nested" / "deep").stat().st_mode & 0o777) == 0o600
    assert not (volume / "old").exists()
    assert not held.exists()  # the previous payload is removed once the link moved
    assert (volume / "..data").is_symlink()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another group needs root")
def test_an_fs_group_owns_the_volume_and_may_read_even_owner_only_keys(tmp_path: Path) -> None:
    """A Secret with ``defaultMode: 0400`` is readable by a non-root pod through its fsGroup, as the
    kubelet's SetVolumeOwnership makes it (pkg/volume/volume_linux.go: group read for read-only
    volumes, group search and setgid on folders)."""
    volume = tmp_path / "vol"
    files = {"token": (b"t0ken", 0o400), "nested/ca.crt": (b"ca", 0o644)}
    assert write_atomically(volume, files, fs_group=FS_GROUP)

    token = (volume / "token").resolve()
    assert (token.stat().st_gid, token.stat().st_mode & 0o7777) == (FS_GROUP, 0o440)
    assert ((volume / "nested" / "ca.crt").stat().st_mode & 0o7777) == 0o644
    for folder in (volume, token.parent, token.parent / "nested"):
        assert (folder.stat().st_gid, folder.stat().st_mode & 0o7777) == (FS_GROUP, 0o2755)
    assert not write_atomically(volume, files, fs_group=FS_GROUP)  # a refresh changes nothing
