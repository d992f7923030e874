"""A pod's volumes as folders on this machine, and each container's mounts of them.

- ``configMap``, ``secret``, ``downwardAPI`` and ``projected`` (those three plus
  ``serviceAccountToken`` through the TokenRequest API) are written the way the kubelet writes them:
  files in a timestamped folder, a ``..data`` symlink swapped by rename, and one symlink per top-level
  entry, so a refresh is atomic for readers. They are mounted read-only.
- ``emptyDir`` is a folder under the pod's folder; with ``medium: Memory`` it lives under
  ``/dev/shm`` (memory-backed, shared by the pod's containers; ``sizeLimit`` is not enforced).
- ``hostPath`` is the host's path itself (``DirectoryOrCreate``/``FileOrCreate`` create it there,
  which is what that volume type means).
- With a pod ``fsGroup``, every volume but ``hostPath`` is given to that group as the kubelet does
  (``fs_group_mode``): so a pod that runs as a non-root user (with ``fsGroup`` among its groups)
  reads its Secrets even with ``defaultMode: 0400``, and writes its emptyDirs.
- Other types (PersistentVolumeClaims, CSI, ...) raise ``VolumeError``.

The ServiceAccount token needs nothing special: in Kubernetes 1.20 the ServiceAccount admission
plugin adds a ``secret`` volume of the account's token Secret (``token``, ``ca.crt``,
``namespace``) mounted at ``/var/run/secrets/kubernetes.io/serviceaccount``, unless
``automountServiceAccountToken`` is false.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tandem.devcluster.env import EnvError, PodFacts, expand, field_value
from tandem.devcluster.launch import MountSpec

_DEFAULT_MODE = 0o644
_DATA_LINK = "..data"

# Files of a volume: relative path -> (content, mode).
VolumeFiles = dict[str, tuple[bytes, int]]
# Fetches a ConfigMap's or Secret's decoded data by name (None when it does not exist).
BinaryLookup = Callable[[str], Awaitable[dict[str, bytes] | None]]
# Issues a ServiceAccount token for (audience, expiration seconds).
TokenIssuer = Callable[[str | None, int], Awaitable[str]]


class VolumeError(Exception):
    """A volume cannot be prepared (missing object or key, unsupported type); the pod waits."""


@dataclass(frozen=True)
class VolumeSources:
    """What building volumes needs from the API, as callables (the shell supplies them)."""

    config_map: BinaryLookup
    secret: BinaryLookup
    token: TokenIssuer


def config_map_bytes(config_map: Any) -> dict[str, bytes]:
    """A V1ConfigMap's ``data`` and ``binaryData`` as bytes."""
    data = {key: value.encode() for key, value in (config_map.data or {}).items()}
    data.update({key: base64.b64decode(value) for key, value in (config_map.binary_data or {}).items()})
    return data


def secret_bytes(secret: Any) -> dict[str, bytes]:
    """A V1Secret's ``data`` decoded."""
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


def _safe_relative(path: str) -> str:
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise VolumeError(f"volume item path {path!r} must be relative and must not contain '..'")
    return str(relative)


def key_files(
    kind: str, name: str, data: Mapping[str, bytes] | None, items: list[Any] | None, mode: int, optional: bool
) -> VolumeFiles:
    """The files a configMap/secret volume (or projection) holds, per its ``items`` selection."""
    if data is None:
        if optional:
            return {}
        raise VolumeError(f'{kind} "{name}" not found')
    if not items:
        return {key: (value, mode) for key, value in data.items()}
    files: VolumeFiles = {}
    for item in items:
        if item.key not in data:
            if optional:
                continue
            raise VolumeError(f'{kind} "{name}" has no key {item.key!r}')
        files[_safe_relative(item.path)] = (data[item.key], item.mode if item.mode is not None else mode)
    return files


def downward_files(items: list[Any], pod: PodFacts, mode: int) -> VolumeFiles:
    """The files of a downwardAPI volume (``fieldRef`` items)."""
    files: VolumeFiles = {}
    for item in items:
        if item.field_ref is None:
            raise VolumeError(f"downwardAPI item {item.path!r}: only fieldRef is supported")
        try:
            value = field_value(item.field_ref.field_path, pod)
        except EnvError as exc:
            raise VolumeError(str(exc)) from exc
        files[_safe_relative(item.path)] = (value.encode(), item.mode if item.mode is not None else mode)
    return files


def fs_group_mode(mode: int, read_only: bool, directory: bool) -> int:
    """The mode of a volume's file or folder once it belongs to the pod's ``fsGroup``, as the kubelet
    sets it (kubernetes pkg/volume/volume_linux.go, ``changeFilePermission``): the group may read,
    and write unless the volume is read-only; folders are also group-searchable and setgid, so what
    is created in them belongs to the group too."""
    mode |= 0o440 if read_only else 0o660
    if directory:
        mode |= stat.S_ISGID | 0o110
    return mode


def give_to_group(root: Path, fs_group: int, read_only: bool) -> None:
    """Give ``root`` and everything below it to group ``fs_group``, with ``fs_group_mode``."""
    _give(root, fs_group, read_only)
    for folder, folders, names in os.walk(root):
        for name in [*folders, *names]:
            _give(Path(folder) / name, fs_group, read_only)


def _give(path: Path, fs_group: int, read_only: bool) -> None:
    os.lchown(path, -1, fs_group)
    info = path.lstat()
    if not stat.S_ISLNK(info.st_mode):
        path.chmod(fs_group_mode(stat.S_IMODE(info.st_mode), read_only, stat.S_ISDIR(info.st_mode)))


def write_atomically(directory: Path, files: VolumeFiles, fs_group: int | None = None) -> bool:
    """Publish ``files`` in ``directory`` behind a swapped ``..data`` link, read-only for the pod and
    given to ``fs_group`` when there is one; False if nothing changed."""
    if fs_group is not None:
        files = {name: (content, fs_group_mode(mode, True, False)) for name, (content, mode) in files.items()}
    directory.mkdir(parents=True, exist_ok=True)
    current = directory / _DATA_LINK
    if current.is_symlink() and _read_files(current) == files:
        return False
    payload = Path(tempfile.mkdtemp(prefix="..", dir=directory))
    payload.chmod(0o755)
    for relative, (content, mode) in files.items():
        path = payload / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    if fs_group is not None:
        # Before the swap, as the kubelet's atomic writer does: readers never see the old owner.
        _give(directory, fs_group, read_only=True)
        give_to_group(payload, fs_group, read_only=True)
    staged = directory / "..data_tmp"
    staged.unlink(missing_ok=True)
    staged.symlink_to(payload.name)
    previous = current.readlink() if current.is_symlink() else None
    staged.replace(current)
    top_level = {PurePosixPath(relative).parts[0] for relative in files}
    for entry in directory.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.name not in top_level:
            entry.unlink()
    for name in top_level:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"{_DATA_LINK}/{name}")
    if previous is not None:
        shutil.rmtree(directory / previous, ignore_errors=True)
    return True


def _read_files(root: Path) -> VolumeFiles:
    files: VolumeFiles = {}
    for path in root.rglob("*"):
        if path.is_file():
            files[str(path.relative_to(root))] = (path.read_bytes(), path.stat().st_mode & 0o7777)
    return files


async def _projected_files(projected: Any, pod: PodFacts, sources: VolumeSources) -> VolumeFiles:
    mode = projected.default_mode if projected.default_mode is not None else _DEFAULT_MODE
    files: VolumeFiles = {}
    for source in projected.sources or []:
        if source.config_map is not None:
            ref = source.config_map
            data = await sources.config_map(ref.name)
            files.update(key_files("configmap", ref.name, data, ref.items, mode, bool(ref.optional)))
        elif source.secret is not None:
            ref = source.secret
            data = await sources.secret(ref.name)
            files.update(key_files("secret", ref.name, data, ref.items, mode, bool(ref.optional)))
        elif source.downward_api is not None:
            files.update(downward_files(source.downward_api.items or [], pod, mode))
        elif source.service_account_token is not None:
            token_source = source.service_account_token
            token = await sources.token(token_source.audience, token_source.expiration_seconds or 3600)
            files[_safe_relative(token_source.path)] = (token.encode(), mode)
        else:
            raise VolumeError("projected volume: only configMap, secret, downwardAPI and serviceAccountToken")
    return files


async def generated_files(volume: Any, pod: PodFacts, sources: VolumeSources) -> VolumeFiles | None:
    """The files of a generated volume (configMap, secret, downwardAPI, projected); None otherwise."""
    if volume.config_map is not None:
        spec = volume.config_map
        mode = spec.default_mode if spec.default_mode is not None else _DEFAULT_MODE
        data = await sources.config_map(spec.name)
        return key_files("configmap", spec.name, data, spec.items, mode, bool(spec.optional))
    if volume.secret is not None:
        spec = volume.secret
        mode = spec.default_mode if spec.default_mode is not None else _DEFAULT_MODE
        data = await sources.secret(spec.secret_name)
        return key_files("secret", spec.secret_name, data, spec.items, mode, bool(spec.optional))
    if volume.downward_api is not None:
        spec = volume.downward_api
        mode = spec.default_mode if spec.default_mode is not None else _DEFAULT_MODE
        return downward_files(spec.items or [], pod, mode)
    if volume.projected is not None:
        return await _projected_files(volume.projected, pod, sources)
    return None


class PodVolumes:
    """The folders backing one pod's volumes: ``prepare`` (and re-run to refresh), ``remove``."""

    def __init__(self, pod_dir: Path, memory_dir: Path, fs_group: int | None = None) -> None:
        self._pod_dir = pod_dir
        self._memory_dir = memory_dir
        self._fs_group = fs_group
        self.paths: dict[str, Path] = {}
        self.read_only: set[str] = set()

    async def prepare(self, volumes: list[Any], pod: PodFacts, sources: VolumeSources) -> bool:
        """Create or refresh every volume; True when a generated volume's content changed."""
        changed = False
        for volume in volumes:
            files = await generated_files(volume, pod, sources)
            if files is not None:
                path = self._pod_dir / "volumes" / volume.name
                changed = write_atomically(path, files, self._fs_group) or changed
                self.read_only.add(volume.name)
            elif volume.empty_dir is not None:
                base = self._memory_dir if volume.empty_dir.medium == "Memory" else self._pod_dir / "volumes"
                path = base / volume.name
                if not path.exists():  # set up once: later refreshes leave what the pod wrote alone
                    path.mkdir(parents=True)
                    path.chmod(0o777)
                    if self._fs_group is not None:
                        give_to_group(path, self._fs_group, read_only=False)
            elif volume.host_path is not None:
                path = _host_path(volume.host_path)
            else:
                raise VolumeError(f"volume {volume.name!r}: this type is not supported by the devcluster")
            self.paths[volume.name] = path
        return changed

    def mounts(self, container: Any, env: Mapping[str, str]) -> list[MountSpec]:
        """The bind mounts for ``container``'s volumeMounts (``subPath``/``subPathExpr`` resolved)."""
        mounts: list[MountSpec] = []
        for mount in container.volume_mounts or []:
            if mount.name not in self.paths:
                raise VolumeError(f"volumeMount {mount.name!r} names no volume of the pod")
            source = self.paths[mount.name]
            sub_path = mount.sub_path or (expand(mount.sub_path_expr, env) if mount.sub_path_expr else "")
            if sub_path:
                source = source / _safe_relative(sub_path)
                if not source.exists():
                    source.mkdir(parents=True)
            mounts.append(
                MountSpec(
                    source=str(source),
                    target=mount.mount_path,
                    read_only=bool(mount.read_only) or mount.name in self.read_only,
                )
            )
        return mounts

    def remove(self) -> None:
        """Delete the pod's memory-backed volumes (the pod folder goes with the cluster's)."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self._memory_dir)


def _host_path(spec: Any) -> Path:
    path = Path(spec.path)
    if spec.type == "DirectoryOrCreate":
        path.mkdir(parents=True, exist_ok=True)
    elif spec.type == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    elif not path.exists():
        raise VolumeError(f"hostPath {spec.path!r} does not exist")
    return path
