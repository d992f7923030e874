"""The resource kinds the operator reads and writes, with their REST paths.

One list drives the watches, the RBAC manifest and the apply paths, so they cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from tandem.api import API_VERSION, KIND, PLURAL
from tandem.operator.capabilities import GIE_VERSIONS, LWS_VERSIONS, PDB_VERSIONS, Capabilities


@dataclass(frozen=True)
class Kind:
    api_version: str  # "v1" for the core group, else "<group>/<version>"
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def root(self) -> str:
        return "/api/v1" if not self.group else f"/apis/{self.api_version}"

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        path = f"{self.root}/namespaces/{namespace}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


POOL = Kind(API_VERSION, KIND, PLURAL)
EVENT = Kind("v1", "Event", "events")

# Children, in every version the operator may render them in.
CHILD_KINDS: tuple[Kind, ...] = (
    Kind("v1", "ConfigMap", "configmaps"),
    Kind("v1", "Service", "services"),
    Kind("v1", "ServiceAccount", "serviceaccounts"),
    Kind("apps/v1", "Deployment", "deployments"),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles"),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    *(Kind(version, "PodDisruptionBudget", "poddisruptionbudgets") for version in PDB_VERSIONS),
    *(Kind(version, "LeaderWorkerSet", "leaderworkersets") for version in LWS_VERSIONS),
    # The Gateway API Inference Extension's InferencePool, never Tandem's (which is POOL).
    *(Kind(version, "InferencePool", "inferencepools") for version in GIE_VERSIONS),
)
_BY_TYPE = {(kind.api_version, kind.kind): kind for kind in CHILD_KINDS}


def discovered_versions(caps: Capabilities) -> dict[str, str | None]:
    """The version each kind that discovery decides is rendered in (None: the cluster serves none)."""
    return {
        "PodDisruptionBudget": caps.pdb_api_version,
        "LeaderWorkerSet": caps.lws_api_version,
        "InferencePool": caps.gie_api_version,
    }


def served_kinds(caps: Capabilities) -> list[Kind]:
    """The children kinds in the versions this cluster serves (and the operator renders)."""
    versioned = discovered_versions(caps)
    return [kind for kind in CHILD_KINDS if versioned.get(kind.kind, kind.api_version) == kind.api_version]


def kind_list_paths(kind: Kind, namespaces: tuple[str, ...]) -> list[str]:
    """Where to list a kind: in each namespace given, else across the cluster."""
    if not namespaces:
        return [f"{kind.root}/{kind.plural}"]
    return [kind.path(namespace) for namespace in namespaces]


def kind_of(manifest: dict[str, object]) -> Kind:
    """The Kind of a rendered child (KeyError for a kind the operator never renders)."""
    return _BY_TYPE[(str(manifest["apiVersion"]), str(manifest["kind"]))]
