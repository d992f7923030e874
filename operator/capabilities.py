"""What the cluster serves that changes what the operator renders (found by API discovery)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from tandem.api import GROUP

# API versions in order of preference: the newest served wins.
PDB_VERSIONS = ("policy/v1", "policy/v1beta1")
LWS_VERSIONS = ("leaderworkerset.x-k8s.io/v1",)
# The Gateway API Inference Extension's InferencePool (not Tandem's): v1 only, the first version in
# the inference.networking.k8s.io group (its alphas were inference.networking.x-k8s.io).
GIE_VERSIONS = ("inference.networking.k8s.io/v1",)
# API groups whose discovery decides the above.
DISCOVERED_GROUPS = tuple(
    sorted({version.rpartition("/")[0] for version in PDB_VERSIONS + LWS_VERSIONS + GIE_VERSIONS})
)
# And the operator's own: a CRD of these groups is awaited served before kopf looks at it again
# (operator/handlers.py), the InferencePool CRD too, when it is applied after the operator starts.
AWAITED_GROUPS = (*DISCOVERED_GROUPS, GROUP)


class Capabilities(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pdb_api_version: str = PDB_VERSIONS[0]
    # None: the LeaderWorkerSet CRD is not installed, so multi-node instances cannot be deployed.
    lws_api_version: str | None = None
    # None: the GIE InferencePool CRD is not installed, so spec.gatewayAPI cannot be honoured.
    gie_api_version: str | None = None

    @property
    def versions(self) -> frozenset[str]:
        """The ``<group>/<version>``s rendered (each field is one, or None)."""
        return frozenset(version for version in self.model_dump().values() if version is not None)


@dataclass(frozen=True)
class CrdChange:
    """What a CRD event says about its versions, which discovery does not: discovery lists a new
    CRD's versions before it is Established, when requests for them still answer "404 page not
    found", and lists a CRD being deleted until it is gone, while the API server already deletes
    its objects and refuses new ones ("create not allowed while custom resource definition is
    terminating", apiextensions-apiserver customresource_handler.go)."""

    established: tuple[str, ...] = ()  # ``<group>/<version>``s an Established CRD serves
    withdrawn: tuple[str, ...] = ()  # those of a CRD not Established yet, or deleted or being deleted


def capabilities_from(served: Iterable[str], withdrawn: Iterable[str] = ()) -> Capabilities:
    """Capabilities from the ``<group>/<version>`` list API discovery reports, less ``withdrawn``."""
    available = set(served) - set(withdrawn)
    pdb = next((version for version in PDB_VERSIONS if version in available), PDB_VERSIONS[-1])
    lws = next((version for version in LWS_VERSIONS if version in available), None)
    gie = next((version for version in GIE_VERSIONS if version in available), None)
    return Capabilities(pdb_api_version=pdb, lws_api_version=lws, gie_api_version=gie)


def still_listed(caps: Capabilities, served: Iterable[str]) -> Capabilities:
    """``caps`` less the versions discovery no longer lists; none added (a new CRD counts once
    Established and routed: ``Reconciler.crd_changed``)."""
    return capabilities_from(caps.versions & set(served))


def crd_deleting(event_type: str | None, crd: Mapping[str, Any]) -> bool:
    """Whether a CRD event tells of its deletion (done, or begun)."""
    return event_type == "DELETED" or bool((crd.get("metadata") or {}).get("deletionTimestamp"))


def crd_change(event_type: str | None, crd: Mapping[str, Any]) -> CrdChange | None:
    """What a CRD event changes, for a CRD of a group in AWAITED_GROUPS (else None)."""
    spec = crd.get("spec") or {}
    group = spec.get("group")
    if group not in AWAITED_GROUPS:
        return None
    versions = tuple(f"{group}/{v['name']}" for v in spec.get("versions") or [] if v.get("served", True))
    conditions = (crd.get("status") or {}).get("conditions") or []
    established = any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
    deleted = crd_deleting(event_type, crd)
    if established and not deleted:
        return CrdChange(established=versions)
    return CrdChange(withdrawn=versions)
