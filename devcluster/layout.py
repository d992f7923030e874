"""Where a devcluster keeps things in its work folder.

<work_dir>/settings.json, supervisor.log
<work_dir>/control-plane/    PKI, tokens, kubeconfig, etcd data, logs/<program>.log
<work_dir>/pods/<namespace>/<name>/<uid>/
    <container>.log          the container's stdout and stderr, across restarts
    network/hosts            the pod's /etc/hosts
    volumes/<volume>/        configMap, secret, emptyDir ... folders
    launch/, scratch/, work/ podinit's input, private root copy, default working folders
"""

from __future__ import annotations

from pathlib import Path


def pod_directory(pods_dir: Path, namespace: str, name: str, uid: str) -> Path:
    return pods_dir / namespace / name / uid


def pod_instances(pods_dir: Path, namespace: str, name: str) -> list[Path]:
    """The folders of every pod that had this name, oldest first."""
    found = [path for path in (pods_dir / namespace / name).glob("*") if path.is_dir()]
    return sorted(found, key=lambda path: path.stat().st_mtime)
