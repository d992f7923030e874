"""The devcluster's settings: parsed once, then handed to the supervisor process as JSON."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

# A test cluster's probe_poll_seconds: a pool is Ready about when its processes are up, not an
# engine's 10 s startup period later.
TEST_PROBE_POLL_SECONDS = 0.5


class NodeSettings(BaseModel):
    """The one node and its kubelet."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "tandem-node"
    gpus: int = Field(8, ge=0, description="allocatable nvidia.com/gpu")
    labels: dict[str, str] = Field(default_factory=dict, description="extra node labels (for nodeSelectors)")
    restart_backoff_initial: float = Field(1.0, gt=0, description="seconds before the first restart")
    restart_backoff_max: float = Field(30.0, gt=0, description="cap of the doubling restart delay, seconds")
    volume_refresh_seconds: float = Field(
        5.0, gt=0, description="how often ConfigMap/Secret/projected volumes are refreshed"
    )
    probe_poll_seconds: float | None = Field(
        None,
        gt=0,
        description="until a container is first started (startup probe) and ready (readiness probe), "
        "probe this often where the probe's period is longer, a startup failing after as many seconds "
        "(a test cluster's: a process up in a second is ready a second later, not a period later); "
        "None: the pod's timing, as the kubelet's",
    )


class DevClusterSettings(BaseModel):
    """Everything the supervisor needs to run a cluster."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    work_dir: Path
    assets: Path | None = Field(None, description="folder with etcd, kube-apiserver, kube-controller-manager")
    node: NodeSettings = Field(default_factory=NodeSettings)


class ClusterInfo(BaseModel):
    """How to reach a running devcluster (the supervisor's ready line)."""

    pid: int
    server: str
    token: str
    kubeconfig: Path
    ca_cert: Path
    work_dir: Path
    service_cidr: str
