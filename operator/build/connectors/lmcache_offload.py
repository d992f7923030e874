"""LMCache's offload tiers on prefillers, as the operator renders them: the config keys, the pod's
extra memory, the disk tier's volume.

Only prefillers get tiers. A decoder (``kv_consumer``) never saves KV (LMCache 0.5.6
``integration/vllm/vllm_v1_adapter.py`` 1024-1026, 1114-1116 and 1633: ``force_skip_save``), so a
tier there would stay empty while pinning its memory; a prefiller (``kv_producer``) looks its
prompts up (1388-1390: every lookup client has ``supports_producer_reuse``), loads the hits from the
tiers, and stores every chunk it computes in each of them (``v1/storage_backend/storage_manager.py``
``batched_put``) as well as pushing it to the decoder.

Sizes are per worker rank in LMCache (GiB: ``local_cpu_backend.py`` 403, ``local_disk_backend.py``
190), as in the API (per GPU), so a pod with several GPUs holds that much for each.
"""

from __future__ import annotations

from typing import Any

from tandem.api.offload import OffloadTiers
from tandem.operator.build.meta import Manifest
from tandem.operator.build.quantity import GIB, gib_quantity

DISK_VOLUME = "lmcache-disk"


def offload_config(offload: OffloadTiers | None) -> dict[str, Any]:
    """The LMCache keys of the tiers (``v1/config.py`` 91-119), ``local_cpu: false`` without any."""
    if offload is None or offload.cpu is None:
        return {"local_cpu": False}
    keys: dict[str, Any] = {"local_cpu": True, "max_local_cpu_size": offload.cpu.size_gib}
    if offload.disk is not None:
        # A plain folder; "file://" is optional (config_base.py 50-85, _parse_local_disk).
        keys |= {"local_disk": offload.disk.mount_path, "max_local_disk_size": offload.disk.size_gib}
    if offload.remote is not None:
        keys |= {"remote_url": offload.remote.url, "remote_serde": offload.remote.serde}
    return keys


def tier_memory_bytes(offload: OffloadTiers | None, gpus_per_pod: int) -> int:
    """Pinned host memory the CPU tier takes in one pod: its size for every worker rank."""
    if offload is None or offload.cpu is None:
        return 0
    return int(offload.cpu.size_gib * GIB) * gpus_per_pod


def disk_volume(offload: OffloadTiers | None, gpus_per_pod: int) -> tuple[list[Manifest], list[Manifest]]:
    """The disk tier's emptyDir, sized for every worker rank's files, and its mount."""
    if offload is None or offload.disk is None:
        return [], []
    size = gib_quantity(offload.disk.size_gib * gpus_per_pod)
    volume = {"name": DISK_VOLUME, "emptyDir": {"sizeLimit": size}}
    return [volume], [{"name": DISK_VOLUME, "mountPath": offload.disk.mount_path}]
