"""``DevCluster``: a real Kubernetes control plane with a process kubelet, owned by this process.

The cluster runs in a supervisor child process (``tandem.devcluster.supervisor``) whose stdin is a
pipe from here: ``stop()`` (or this process ending in any way, even by SIGKILL) closes it and the
supervisor stops every process of the cluster.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import kubernetes.client

from tandem.devcluster.assets import find_assets
from tandem.devcluster.containers import check_runtime
from tandem.devcluster.errors import DevClusterError
from tandem.devcluster.layout import pod_instances
from tandem.devcluster.processes import signal_group, tail
from tandem.devcluster.settings import ClusterInfo, DevClusterSettings, NodeSettings

_STOP_TIMEOUT = 60.0


def read_line(stream: int, timeout: float) -> bytes:
    """One line from the file descriptor ``stream``; empty on end of file or timeout."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([stream], [], [], remaining)[0]:
            return b""
        chunk = os.read(stream, 4096)
        if not chunk:
            return b""
        data += chunk
    return data


class DevCluster:
    """Start with ``start()`` or ``with DevCluster() as cluster:``; stop with ``stop()``.

    ``assets``: folder with etcd, kube-apiserver and kube-controller-manager (default
    ``$KUBEBUILDER_ASSETS``). ``work_dir``: where state and logs go (default: a new temporary
    folder, removed by ``stop()``; a given folder is kept).
    """

    def __init__(
        self,
        assets: Path | str | None = None,
        work_dir: Path | str | None = None,
        node: NodeSettings | None = None,
        startup_timeout: float = 120.0,
    ) -> None:
        self._assets = assets
        self._work_dir = Path(work_dir) if work_dir is not None else None
        self._owns_work_dir = work_dir is None
        self._node = node or NodeSettings()
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._info: ClusterInfo | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> DevCluster:
        if self._process is not None:
            raise DevClusterError("this DevCluster is already started")
        assets = find_assets(self._assets)
        check_runtime()
        work_dir = self._work_dir or Path(tempfile.mkdtemp(prefix="tandem-devcluster-"))
        self._work_dir = work_dir
        work_dir.mkdir(parents=True, exist_ok=True)
        settings = DevClusterSettings(work_dir=work_dir, assets=assets.etcd.parent, node=self._node)
        settings_file = work_dir / "settings.json"
        settings_file.write_text(settings.model_dump_json())
        log = work_dir / "supervisor.log"
        with log.open("ab") as log_file:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "tandem.devcluster.supervisor"),
                    *("--settings", str(settings_file), "--watch-stdin"),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,
            )
        assert self._process.stdout is not None
        line = read_line(self._process.stdout.fileno(), self._startup_timeout)
        if not line:
            self.stop(remove_work_dir=False)
            raise DevClusterError(f"the devcluster did not start (log: {log}):\n{tail(log)}")
        self._info = ClusterInfo.model_validate_json(line)
        return self

    def stop(self, remove_work_dir: bool = True) -> None:
        """Stop every process of the cluster; remove the work folder if this object made it."""
        process = self._process
        if process is None:
            return
        self._process = None
        self._info = None
        if process.stdin is not None:
            process.stdin.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if remove_work_dir and self._owns_work_dir and self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)

    def __enter__(self) -> DevCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- access ------------------------------------------------------------------------------

    @property
    def info(self) -> ClusterInfo:
        if self._info is None:
            raise DevClusterError("the devcluster is not running")
        return self._info

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (token user, CA included)."""
        return self.info.kubeconfig

    @property
    def server(self) -> str:
        """The apiserver's URL (https://127.0.0.1:<port>)."""
        return self.info.server

    @property
    def token(self) -> str:
        """The admin's bearer token (group system:masters)."""
        return self.info.token

    @property
    def work_dir(self) -> Path:
        return self.info.work_dir

    def api_client(self) -> kubernetes.client.ApiClient:
        """A new admin client of the official (sync) ``kubernetes`` package; close it when done."""
        configuration = kubernetes.client.Configuration()
        configuration.host = self.server
        configuration.ssl_ca_cert = str(self.info.ca_cert)
        configuration.api_key = {"BearerToken": self.token}
        configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return kubernetes.client.ApiClient(configuration)

    def pod_logs(self, namespace: str, name: str, container: str | None = None) -> str:
        """The output (stdout and stderr) of a pod's container, across restarts; with no
        ``container``, every container's, in name order. The newest pod of that name is read;
        before any has started, the output is empty."""
        instances = pod_instances(self.work_dir / "pods", namespace, name)
        if not instances:
            return ""
        newest = instances[-1]
        logs = sorted(newest.glob("*.log")) if container is None else [newest / f"{container}.log"]
        return "".join(log.read_text(errors="replace") for log in logs if log.exists())
