"""Finding the control-plane programs (the envtest ``KUBEBUILDER_ASSETS`` convention)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from tandem.devcluster.errors import AssetsMissingError, BrokenApiserverError

ASSETS_ENV = "KUBEBUILDER_ASSETS"
PROGRAMS = ("etcd", "kube-apiserver", "kube-controller-manager")
# sha256 of the old shared envtest kube-apiserver (1.20.2, Go 1.19, reflect2 1.0.1): it cannot serve
# custom resources. ../shared now holds a rebuilt one; this guard (and devcluster/envtest/assets.sh,
# which repeats the checksum) names the fix.
BROKEN_APISERVER_SHA256 = "629bfa9de8e40ef6fe5c71a17f2efd22975f72aeda9e599c986232cf1d3aa537"
BROKEN_APISERVER_SIZE = 110_280_704


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
    apiserver = path / "kube-apiserver"
    if is_broken_apiserver(apiserver):
        raise BrokenApiserverError(str(apiserver))
    return Assets(path / "etcd", apiserver, path / "kube-controller-manager")


def is_broken_apiserver(program: Path) -> bool:
    # The size rules most binaries out before hashing 100 MB.
    if program.stat().st_size != BROKEN_APISERVER_SIZE:
        return False
    with program.open("rb") as binary:
        return hashlib.file_digest(binary, "sha256").hexdigest() == BROKEN_APISERVER_SHA256
