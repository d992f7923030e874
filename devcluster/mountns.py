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

A pod that runs as another user must still reach the files its "image" consists of (here: this
machine's Python and Tandem's files, say under ``/root``, mode 0700). ``pass_through`` covers each
folder on the way that the user cannot pass with a tmpfs that everyone may pass but not list, holding
only the entries on the way (bind mounts of the originals): the user reaches the interpreter, and sees
nothing else of ``/root``; the host's modes stay as they are.
One consequence: a file directly inside a mirrored folder is bound at container start, so if the
host later *replaces* it (rename over it) the container keeps seeing the old file; rewrites in place,
and anything inside bound sub-folders, show as usual. (The kubelet keeps each pod's hosts file in
a folder of its own for this reason.)
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable, Iterable, Mapping, Set
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


def _mount_tmpfs(target: Path, like: os.stat_result, extra_mode: int = 0) -> None:
    mode = stat.S_IMODE(like.st_mode) | extra_mode
    _mount("tmpfs", str(target), "tmpfs", 0, f"mode={mode:o},uid={like.st_uid},gid={like.st_gid}")


def _recreate_entries(
    original: int, into: Path, links: Mapping[str, str], only: Set[str] | None = None
) -> None:
    """Recreate the entries of the directory open as fd ``original`` inside ``into`` (those named in
    ``only``, when given)."""
    source_root = f"/proc/self/fd/{original}"
    for entry in os.scandir(source_root):
        target = into / entry.name
        if entry.name in links or (only is not None and entry.name not in only):
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


def blocked_on_the_way(paths: Iterable[Path], passable: Callable[[Path], bool]) -> dict[Path, set[str]]:
    """The folders on the way to ``paths`` (resolved) that ``passable`` says a user cannot pass, each
    with its entries that lead on to them."""
    verdicts: dict[Path, bool] = {}
    blocked: dict[Path, set[str]] = {}
    for path in paths:
        real = Path(os.path.realpath(path))
        for folder, entry in zip(reversed(real.parents), real.parts[1:], strict=True):
            if folder not in verdicts:
                verdicts[folder] = passable(folder)
            if not verdicts[folder]:
                blocked.setdefault(folder, set()).add(entry)
    return blocked


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

    def pass_through(self, blocked: Mapping[Path, Set[str]]) -> None:
        """Cover each folder of ``blocked`` with a tmpfs every user may pass (its mode plus search for
        all) holding only the named entries, bound from the originals (see ``blocked_on_the_way``).
        Runs after the mounts: what is below a covered folder and not named is out of sight."""
        for folder in sorted(blocked, key=lambda path: len(path.parts)):
            if folder == Path("/"):
                raise MountError(errno.EACCES, "the root folder cannot be passed by the container's user")
            original = os.open(folder, os.O_PATH | os.O_DIRECTORY)
            try:
                _mount_tmpfs(folder, os.fstat(original), extra_mode=0o111)
                _recreate_entries(original, folder, {}, only=blocked[folder])
            finally:
                os.close(original)

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
