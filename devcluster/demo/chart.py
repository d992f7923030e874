"""Install and uninstall the Tandem Helm chart (charts/tandem) with the Helm SDK, in process."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import helm_python as helm

from tandem.devcluster.demo import DemoError

# The repository's chart; the demo and the e2e tests run from a checkout (editable install).
CHART_DIR = Path(__file__).resolve().parents[2] / "charts" / "tandem"
INSTALL_TIMEOUT_S = 120


def chart_dir() -> Path:
    if not (CHART_DIR / "Chart.yaml").is_file():
        raise DemoError(f"the Helm chart is not at {CHART_DIR}: run the demo from a clone of the repository")
    return CHART_DIR


def install(kubeconfig: Path, release: str, namespace: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``helm install --create-namespace``; returns the release summary (with rendered NOTES)."""
    with helm.Config(kubeconfig_path=str(kubeconfig), namespace=namespace) as config:
        try:
            return config.install(
                str(chart_dir()),
                release,
                dict(values),
                namespace=namespace,
                create_namespace=True,
                timeout=INSTALL_TIMEOUT_S,
            )
        except helm.HelmError as exc:
            raise DemoError(f"helm install {release} failed: {exc}") from exc


def uninstall(kubeconfig: Path, release: str, namespace: str, wait: bool = True) -> None:
    """``helm uninstall``; with ``wait``, until the release's objects are gone. No release: no-op."""
    with helm.Config(kubeconfig_path=str(kubeconfig), namespace=namespace) as config:
        config.uninstall(
            release,
            ignore_not_found=True,
            wait="watcher" if wait else None,
            timeout=INSTALL_TIMEOUT_S,
        )
