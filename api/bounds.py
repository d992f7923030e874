"""Bounds of a pool. Pins beyond them fail validation (the CRD carries them too); a plan beyond them
is Infeasible."""

from __future__ import annotations

MAX_REPLICAS = 1000  # of any one component (prefill, decode, router)
MAX_GPUS_PER_NODE = 16
MAX_TENSOR_PARALLEL = MAX_GPUS_PER_NODE  # tensor parallelism stays within a node
MAX_PIPELINE_PARALLEL = 64
MAX_DATA_PARALLEL = 256  # DP ranks of one replica (published wide-EP decode runs up to 320 GPUs)
