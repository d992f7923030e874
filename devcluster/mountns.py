"""Shaping a pod's private mount namespace (runs inside it, as root, before the container starts).

Kubernetes mounts volumes at paths an image may lack (``/etc/lmcache/config.yaml``,
``/var/run/secrets/kubernetes.io/serviceaccount``). Here the "image" is the host's own filesystem,
which must not change, so a missing path is made by *mirroring* its deepest existing ancestor:

- ``mirror(A)``: hold the original ``A`` open, mount a fresh tmpfs over ``A`` (same mode and
  owner), then recreate each entry of the original inside it: directories and files are recursive
  bind mounts of the originals (so their contents, and mounts below them, stay the host's),
  symbolic links are copied. ``A`` now looks the same, but new entries land in the tmpfs, private
  to this namespace and gone with it.
- The root cannot be covered that way (a process's root does not move when something is mounted on
  ``/``), so mirroring ``/`` builds the same tmpfs copy on a scratch folder and ``chroot``s into it.

Only ancestors that lack a wanted entry are mirrored; all else is the host's view, unchanged.
One consequence: a file directly inside a mirrored folder is bound at container start, so if the
host later *replaces* it (rename over it) the container keeps seeing the old file; rewrites in place,
and anything inside bound sub-folders, show as usual. (The kubelet keeps each pod's hosts file in
a folder of its own for this reason.)
"""

from __future__ import annotations

import ctypes
import os
import stat
from pathlib import Path

_MS_RDONLY = 0x1
_MS_REMOUNT = 0x20
_MS_BIND = 0x1000
_MS_REC = 0x4000
_MNT_DETACH = 0x2

_libc = ctypes.CDLL(None, use_errno=True)


class MountError(OSError):
    """A mount system call failed; the message names the call and the paths."""


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    result = _libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if result != 0:
        errno = ctypes.get_errno()
        raise MountError(errno, f"mount {source} -> {target} ({fstype or 'bind'}): {os.strerror(errno)}")


def bind(source: Path, target: Path, read_only: bool = False) -> None:
    """Recursive bind mount of ``source`` onto ``target`` (both must exist), read-only if asked."""
    _mount(str(source), str(target), None, _MS_BIND | _MS_REC)
    if read_only:
        _mount("none", str(target), None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY)


def _mount_tmpfs(target: Path, like: os.stat_result) -> None:
    mode = stat.S_IMODE(like.st_mode)
    _mount("tmpfs", str(target), "tmpfs", 0, f"mode={mode:o},uid={like.st_uid},gid={like.st_gid}")


def _recreate_entries(original: int, into: Path, links: dict[str, str]) -> None:
    """Recreate the entries of the directory open as fd ``original`` inside ``into``."""
    source_root = f"/proc/self/fd/{original}"
    for entry in os.scandir(source_root):
        target = into / entry.name
        if entry.name in links:
            continue
        if entry.is_symlink():
            target.symlink_to(Path(entry.path).readlink())
        elif entry.is_dir(follow_symlinks=False):
            target.mkdir()
            bind(Path(entry.path), target)
        else:
            target.touch()
            bind(Path(entry.path), target)
    for name, destination in links.items():
        (into / name).symlink_to(destination)


class MountNamespace:
    """Builds the pod's view of the filesystem; ``scratch`` is an empty folder for the root copy."""

    def __init__(self, scratch: Path) -> None:
        self._scratch = scratch
        # Folders whose new entries land in a tmpfs of ours (never on the host).
        self._private: set[Path] = set()

    def mirror(self, directory: Path, links: dict[str, str] | None = None) -> None:
        """Cover ``directory`` with a private copy of itself; ``links`` replace entries with symlinks."""
        directory = Path(os.path.realpath(directory))
        wanted = links or {}
        if directory in self._private:
            for name, destination in wanted.items():
                replaced = directory / name
                if replaced.is_symlink() or replaced.is_file():
                    self._unmount_quietly(replaced)
                    replaced.unlink()
                replaced.symlink_to(destination)
            return
        original = os.open(directory, os.O_PATH | os.O_DIRECTORY)
        try:
            like = os.fstat(original)
            if directory == Path("/"):
                root = self._scratch / "root"
                root.mkdir(parents=True, exist_ok=True)
                _mount_tmpfs(root, like)
                _recreate_entries(original, root, wanted)
                os.chroot(root)
                os.chdir("/")
            else:
                _mount_tmpfs(directory, like)
                _recreate_entries(original, directory, wanted)
        finally:
            os.close(original)
        self._private.add(directory)

    @staticmethod
    def _unmount_quietly(path: Path) -> None:
        _libc.umount2(str(path).encode(), _MNT_DETACH)

    def ensure(self, path: Path, directory: bool) -> Path:
        """Make ``path`` exist (a folder or an empty file) without touching the host; its real path."""
        real = Path(os.path.realpath(path))
        if real.exists():
            if real.is_dir() != directory:
                kind = "a folder" if directory else "a file"
                raise MountError(0, f"cannot mount {kind} at {path}: something else is there")
            return real
        ancestor = real.parent
        missing = [real]
        while not ancestor.exists():
            missing.append(ancestor)
            ancestor = ancestor.parent
        if ancestor not in self._private:
            self.mirror(ancestor)
        for folder in reversed(missing[1:]):
            folder.mkdir()
            self._private.add(folder)
        if directory:
            real.mkdir()
            self._private.add(real)
        else:
            real.touch()
        return real
