"""Kubernetes without containers: a real control plane and a kubelet that runs local processes.

``DevCluster`` starts etcd, kube-apiserver and kube-controller-manager (from
``$KUBEBUILDER_ASSETS``, Kubernetes 1.20) on free loopback ports, registers one Ready Node with
8 ``nvidia.com/gpu``, and plays kubelet, kube-proxy and cluster DNS for it:

- **Pods** are bound to the node (no scheduler runs; see ``kubelet``) and each container becomes a
  local process (see ``images`` for what can run: Tandem's image runs this installation's
  ``tandem``; other containers need a ``command`` installed here). Status, probes, restarts with
  back-off and graceful deletion work as in Kubernetes; logs are files (``DevCluster.pod_logs``).
- **Pod network**: every pod gets its own loopback address (127.0.1.x, ``status.podIP``). All pods
  share this machine's network namespace, so a program must bind its pod IP, not 0.0.0.0. Every
  container therefore gets ``TANDEM_BIND_HOST=<pod IP>``; Tandem's programs bind that address when
  it is set (the contract for anything Tandem runs as a server).
- **Volumes** (configMap, secret, emptyDir incl. ``medium: Memory``, downwardAPI, projected, the
  ServiceAccount token, hostPath) appear at their mount paths inside a private mount namespace per
  container (``unshare -m``; root needed). Mount paths whose parents do not exist on the host
  (``/etc/lmcache/config.yaml``, ``/var/run/secrets/kubernetes.io/serviceaccount``, ``/models``)
  work without touching the host: the deepest existing ancestor is covered, inside the namespace
  only, by a tmpfs that re-binds all its original entries (``/`` itself via a chroot into such a
  copy). See ``mountns``.
- **Users**: a pod runs as its ``runAsUser``/``runAsGroup`` with ``fsGroup`` and
  ``supplementalGroups`` as supplementary groups (exec probes too); the folders of this
  installation (its "image") are made reachable for that uid inside the pod's namespace, the host's
  modes unchanged; volumes belong to ``fsGroup`` as on a kubelet. See ``podinit`` and docs/testing.md.
- **In-cluster API access**: ServiceAccount token Secrets (legacy tokens, 1.20) are mounted at
  ``/var/run/secrets/kubernetes.io/serviceaccount`` with ``ca.crt`` (the CA of the apiserver's
  certificate, which names 127.100.0.1) and ``namespace``; ``KUBERNETES_SERVICE_HOST/PORT`` point
  at the ``kubernetes`` Service (127.100.0.1:443), so ``load_incluster_config()`` works and RBAC
  applies to the pod's ServiceAccount.
- **Services**: ClusterIPs come from 127.100.0.0/16 and a userspace proxy listens on each
  ``ClusterIP:port``, round-robin over ready endpoints (EndpointSlices). **DNS**: each pod's
  ``/etc/hosts`` maps ``<svc>.<ns>.svc.cluster.local``, ``<svc>.<ns>.svc``, ``<svc>.<ns>`` and
  (same namespace) ``<svc>`` to ClusterIPs, or to ready pod IPs for headless Services.

Several devclusters can run at once on one machine: each claims an address *slot* (pod IPs
127.k.x.y, Services 127.(100+k).0.0/16; see ``network``). ``tandem devcluster up`` / ``down`` run one
from the shell (state in ``$XDG_RUNTIME_DIR/tandem-devcluster`` or ``/tmp/tandem-devcluster-<uid>``).
Pytest fixtures: ``tandem.devcluster.testing``.

Not there (by design of a process kubelet): isolation beyond mounts (no cgroup limits, one network
namespace), the kubelet API (``kubectl logs/exec/port-forward``; use ``DevCluster.pod_logs``),
Events, preStop/postStart hooks, ``hostNetwork``, Endpoints objects (the API rejects loopback
addresses in them; EndpointSlices carry the endpoints), UDP, NodePort and ExternalName Services.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tandem.devcluster.env import BIND_HOST_ENV
from tandem.devcluster.errors import AssetsMissingError, DevClusterError
from tandem.devcluster.settings import NodeSettings

if TYPE_CHECKING:
    from tandem.devcluster.cluster import DevCluster

__all__ = ["BIND_HOST_ENV", "AssetsMissingError", "DevCluster", "DevClusterError", "NodeSettings"]


def __getattr__(name: str) -> Any:
    # DevCluster pulls in the kubernetes client; importing it lazily keeps podinit, which every
    # container runs first, quick to start.
    if name == "DevCluster":
        from tandem.devcluster.cluster import DevCluster

        return DevCluster
    raise AttributeError(name)
