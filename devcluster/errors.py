"""The devcluster's exceptions.

``DevClusterError`` is the root: the cluster could not start, or an operation on it failed.
``AssetsMissingError`` says which control-plane programs were not found, so callers (the pytest
fixtures) can skip or fail with a message that names ``KUBEBUILDER_ASSETS``.
"""

from __future__ import annotations


class DevClusterError(Exception):
    """The devcluster could not do what was asked; the message says why."""


class AssetsMissingError(DevClusterError):
    """Control-plane programs are missing from the assets folder."""

    def __init__(self, folder: str | None, missing: tuple[str, ...]) -> None:
        self.folder = folder
        self.missing = missing
        where = f"KUBEBUILDER_ASSETS={folder}" if folder else "KUBEBUILDER_ASSETS is not set"
        super().__init__(
            f"{where}: missing {', '.join(missing)} "
            "(point KUBEBUILDER_ASSETS at a folder with etcd, kube-apiserver and kube-controller-manager, "
            "e.g. `export KUBEBUILDER_ASSETS=$(devcluster/envtest/assets.sh)`)"
        )


class BrokenApiserverError(DevClusterError):
    """The kube-apiserver is a build known to fail every custom-resource request."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"{path} is the Kubernetes 1.20.2 kube-apiserver built with Go 1.19, whose vendored reflect2 "
            "1.0.1 drops every custom-resource request (InferencePools included): update ../shared, whose "
            "envtest/ now holds one rebuilt with reflect2 1.0.2, and `export "
            "KUBEBUILDER_ASSETS=$(devcluster/envtest/assets.sh)` again"
        )
