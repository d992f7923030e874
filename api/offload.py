"""LMCache's offload tiers (``spec.disaggregation.kvTransfer.lmcache.offload``): where a prefiller
keeps the KV it computed, so that a later prompt with the same prefix loads it instead of
recomputing it.

LMCache 0.5.6 facts (the lmcache 0.5.6 wheel's ``lmcache/``; docs/operator.md, "Offload tiers", has them all):

- ``max_local_cpu_size`` and ``max_local_disk_size`` are floats of GiB per worker rank
  (``v1/config.py`` 96 and 113; ``v1/storage_backend/local_cpu_backend.py`` 403 and
  ``local_disk_backend.py`` 190 multiply them by ``1024**3``).
- In PD mode the CPU tier exists only with ``local_cpu: true``, and the disk and remote tiers need
  it as their staging buffer (``v1/storage_backend/__init__.py`` 173-190, 217-223;
  ``remote_backend.py`` 349-352, 610-614): so disk and remote need cpu.
- ``remote_url``'s scheme picks the connector (``connector/__init__.py`` 366-416: ``://`` required;
  one adapter per scheme, ``connector/*_adapter.py``); ``remote_serde`` is ``naive``, ``kivi`` or
  ``cachegen`` (``naive_serde/__init__.py`` 29-39).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tandem.api.base import ApiModel

# The most GiB one tier may take per GPU: far above any node, far below a float's precision.
MAX_TIER_GIB = 4096
# The schemes of LMCache 0.5.6's storage adapters (connector/*_adapter.py), less the ones for tests
# and plugins (mock, blackhole, audit, external, plugin).
REMOTE_SCHEMES = (
    "lm",
    "redis",
    "rediss",
    "redis-sentinel",
    "redis-cluster",
    "valkey",
    "resp",
    "fs",
    "s3",
    "infinistore",
    "mooncakestore",
    "azure",
    "eic",
    "hf3fs",
    "sagemaker-hyperpod",
)
_URL = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<rest>[^\s]*)$")
DISK_MOUNT_PATH = "/var/cache/lmcache-disk"


class CpuTier(ApiModel):
    """Pinned host memory (LMCache's local_cpu)."""

    size_gib: float = Field(
        gt=0,
        le=MAX_TIER_GIB,
        alias="sizeGiB",
        description="GiB per GPU (LMCache's max_local_cpu_size: every worker rank holds its own); "
        "engine pods request this much more memory for each of their GPUs.",
    )


class DiskTier(ApiModel):
    """Files on an emptyDir of the engine pod (LMCache's local_disk), staged through the CPU
    tier; they go with the pod."""

    size_gib: float = Field(
        gt=0,
        le=MAX_TIER_GIB,
        alias="sizeGiB",
        description="GiB per GPU (LMCache's max_local_disk_size); the emptyDir's sizeLimit is this "
        "for each of the pod's GPUs.",
    )
    mount_path: str = Field(
        default=DISK_MOUNT_PATH, pattern=r"^/[^,:\s]*$", description="Where engines see the volume."
    )


class RemoteTier(ApiModel):
    """A shared KV store (LMCache's remote_url), staged through the CPU tier."""

    url: str = Field(
        min_length=1,
        max_length=2048,
        description="e.g. lm://lmcache-server:65432 or redis://redis:6379; no credentials (the "
        "ConfigMap it is rendered into is no Secret).",
    )
    serde: Literal["naive", "kivi", "cachegen"] = Field(
        default="naive", description="LMCache's remote_serde: how chunks are encoded in the store."
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        match = _URL.match(url)
        if match is None or match["scheme"] not in REMOTE_SCHEMES:
            raise ValueError(f"{url!r} is not <scheme>://..., with a scheme of {', '.join(REMOTE_SCHEMES)}")
        if "@" in match["rest"].split("/", 1)[0]:
            raise ValueError("holds credentials (user@host): the rendered ConfigMap would expose them")
        return url


class OffloadTiers(ApiModel):
    """Where LMCache keeps prefix KV on prefillers, beside the GPU's prefix cache."""

    cpu: CpuTier | None = None
    disk: DiskTier | None = None
    remote: RemoteTier | None = None

    @model_validator(mode="after")
    def _staged_through_cpu(self) -> OffloadTiers:
        for name, tier in (("disk", self.disk), ("remote", self.remote)):
            if tier is not None and self.cpu is None:
                raise ValueError(
                    f"offload.{name} needs offload.cpu: LMCache stages it through the CPU tier, which "
                    "PD mode creates only with local_cpu (v1/storage_backend/__init__.py 173-223)"
                )
        return self
