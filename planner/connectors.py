"""What each KV connector asks of the layouts it joins: the planner's one table of them, which the
operator's layout and validation read too (docs/add-a-kv-connector.md).

LMCache 0.5.6 (the lmcache 0.5.6 wheel's `lmcache/`):
- A chunk's key holds the world size and the worker id (`utils.py`, `CacheEngineKey`), so a
  decoder finds a prefiller's chunks only at the same tensor parallelism.
- `v1/storage_backend/pd_backend_async.py` indexes `pd_peer_init_port` / `pd_peer_alloc_port` by the
  worker id, which `integration/vllm/vllm_service_factory.py` sets to `parallel_config.rank`
  (TP x PP), and a request names one receiver host: one pipeline stage only.
- `v1/storage_backend/pd_backend.py` picks its PD ports by the TP rank (`pd_peer_init_port
  [tp_rank]`), which every data-parallel rank of an engine on one node repeats: no DP ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

from tandem.api import KvConnector

LMCACHE_SAME_TENSOR_PARALLEL = (
    "the LMCache connector needs prefill and decode at the same tensor parallelism: its KV chunk "
    "keys hold the world size and the worker id"
)
LMCACHE_SINGLE_STAGE = (
    "the LMCache connector needs PP=1: it indexes its port lists by the engine's global worker rank "
    "(TP x PP) and a request names one receiver host (use the nixl connector for pipeline stages)"
)
LMCACHE_NO_DATA_PARALLEL = (
    "the LMCache connector picks its PD ports by the TP rank, which DP ranks on one node would share"
)


@dataclass(frozen=True)
class LayoutRules:
    """A connector's constraints on the layouts, each the reason it holds (None: no constraint)."""

    same_tensor_parallel: str | None = None  # why prefill and decode need one TP size
    single_stage: str | None = None  # why every instance needs PP=1
    no_data_parallel: str | None = None  # why instances take no data-parallel (DP/EP) layout
    decoder_pd_buffer: bool = False  # decoders receive handoffs into a buffer the plan sizes


LAYOUT_RULES: dict[KvConnector, LayoutRules] = {
    KvConnector.LMCACHE: LayoutRules(
        same_tensor_parallel=LMCACHE_SAME_TENSOR_PARALLEL,
        single_stage=LMCACHE_SINGLE_STAGE,
        no_data_parallel=LMCACHE_NO_DATA_PARALLEL,
        decoder_pd_buffer=True,
    ),
    # vLLM maps a prefiller's TP ranks to a decoder's (kv_connector/v1/nixl/base_worker.py, tp_ratio).
    KvConnector.NIXL: LayoutRules(),
    KvConnector.NONE: LayoutRules(),
}
