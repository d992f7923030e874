"""Where a role's engine pods may run: the user's nodeSelector and tolerations, and the GPU type. Pure.

A role with its own accelerator (``spec.accelerator.prefill`` / ``.decode``) keeps the pool's
nodeSelector and tolerations unless it sets its own. The GPU type is always selected: GPU feature
discovery (GFD, in NVIDIA's k8s-device-plugin and GPU operator) labels every GPU node with
``nvidia.com/gpu.product``, the device name NVML reports with its spaces turned into dashes
(``productLabel`` in NVIDIA/k8s-device-plugin internal/lm/resource.go; an H100 SXM5 node is
``NVIDIA-H100-80GB-HBM3``), so each role selects the value of its planned GPU (the planner's
catalog holds the device names). A value the user selects for that label wins, and an empty label
(an operator setting, for clusters without GFD) selects no GPU type.
"""

from __future__ import annotations

from tandem.api import EngineType, InferencePoolSpec
from tandem.api.spec import Toleration
from tandem.operator.naming import Role

GFD_PRODUCT_LABEL = "nvidia.com/gpu.product"


def gfd_product(device_name: str) -> str:
    """GFD's ``nvidia.com/gpu.product`` value for a GPU NVML names ``device_name`` (a whole GPU, no
    MIG, not time-shared: GFD adds ``-MIG-<profile>`` or ``-SHARED`` to those)."""
    return device_name.replace(" ", "-")


def role_placement(
    spec: InferencePoolSpec, role: Role, gpu_device: str, gpu_label: str
) -> tuple[dict[str, str], tuple[Toleration, ...]]:
    """The nodeSelector and tolerations of ``role``'s engine pods, which run on a ``gpu_device``.

    ``gpu_label``: the node label that names the GPU type (GFD's by default; empty: none)."""
    accelerator = spec.accelerator
    own = accelerator.prefill if role is Role.PREFILL else accelerator.decode
    tolerations = tuple(own.tolerations if own and own.tolerations else accelerator.tolerations)
    if own is not None and own.node_selector:
        selector = dict(own.node_selector)
    else:
        selector = dict(accelerator.node_selector)
        if own is not None and own.type.lower() != accelerator.type.lower():
            selector.pop(gpu_label, None)  # the pool's GPU type, not this role's
    if gpu_label and spec.engine.type != EngineType.SIMULATOR:  # a simulated engine uses no GPU
        selector.setdefault(gpu_label, gfd_product(gpu_device))
    return selector, tolerations
