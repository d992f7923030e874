"""The InferencePool resource: group, version, names, and the whole object."""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import Field

from tandem.api.base import ApiModel
from tandem.api.spec import InferencePoolSpec
from tandem.api.status import InferencePoolStatus

GROUP: Final = "tandem.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "tandem.dev/v1alpha1"
KIND: Final = "InferencePool"
PLURAL = "inferencepools"
SINGULAR = "inferencepool"
# Not `infpool`: the Gateway API Inference Extension's InferencePool has that short name.
SHORT_NAMES = ("tpool",)
# On every child of a pool (the pool's name), and on engine pods and workloads (their role):
# what selectors, the router and tools such as `tandem load --pool` find a pool's objects by.
POOL_LABEL: Final = "tandem.dev/pool"
ROLE_LABEL: Final = "tandem.dev/role"


class InferencePool(ApiModel):
    api_version: Literal["tandem.dev/v1alpha1"] = API_VERSION
    kind: Literal["InferencePool"] = KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: InferencePoolSpec
    status: InferencePoolStatus | None = None
