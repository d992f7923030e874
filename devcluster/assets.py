"""Finding the control-plane programs (the envtest ``KUBEBUILDER_ASSETS`` convention)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tandem.devcluster.errors import AssetsMissingError

ASSETS_ENV = "KUBEBUILDER_ASSETS"
PROGRAMS = ("etcd", "kube-apiserver", "kube-controller-manager")


@dataclass(frozen=True)
class Assets:
    """Paths of the three control-plane programs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path


def missing_programs(folder: Path) -> tuple[str, ...]:
    """The programs of ``PROGRAMS`` that ``folder`` lacks (or holds without the execute bit)."""
    return tuple(name for name in PROGRAMS if not os.access(folder / name, os.X_OK))


def find_assets(folder: Path | str | None = None) -> Assets:
    """The programs in ``folder``, or in ``$KUBEBUILDER_ASSETS`` when no folder is given."""
    chosen = folder if folder is not None else os.environ.get(ASSETS_ENV) or None
    if chosen is None:
        raise AssetsMissingError(None, PROGRAMS)
    path = Path(chosen)
    missing = missing_programs(path)
    if missing:
        raise AssetsMissingError(str(path), missing)
    return Assets(path / "etcd", path / "kube-apiserver", path / "kube-controller-manager")
