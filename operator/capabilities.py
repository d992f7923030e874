"""What the cluster serves that changes what the operator renders (found by API discovery)."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

# API versions in order of preference: the newest served wins.
PDB_VERSIONS = ("policy/v1", "policy/v1beta1")
LWS_VERSIONS = ("leaderworkerset.x-k8s.io/v1",)
# API groups whose discovery decides the above.
DISCOVERED_GROUPS = tuple(sorted({version.rpartition("/")[0] for version in PDB_VERSIONS + LWS_VERSIONS}))


class Capabilities(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    pdb_api_version: str = PDB_VERSIONS[0]
    # None: the LeaderWorkerSet CRD is not installed, so multi-node instances cannot be deployed.
    lws_api_version: str | None = None


def capabilities_from(served: Iterable[str]) -> Capabilities:
    """Capabilities from the ``<group>/<version>`` list API discovery reports."""
    available = set(served)
    pdb = next((version for version in PDB_VERSIONS if version in available), PDB_VERSIONS[-1])
    lws = next((version for version in LWS_VERSIONS if version in available), None)
    return Capabilities(pdb_api_version=pdb, lws_api_version=lws)
