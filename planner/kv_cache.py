"""One token's KV cache as vLLM lays it out and LMCache hands it off: the one formula the planner
(memory fit, handoff time) and the router (decoder PD-buffer admission, notifications) share.

vLLM 0.33.0 (the vllm 0.33.0 wheel's `vllm/`):
- The element type. `--kv-cache-dtype auto` (what the operator renders) resolves to the
  checkpoint's `kv_cache_quant_algo` when its quantization config names one, else to the model's
  activation dtype (`utils/torch_utils.py`: `resolve_kv_cache_dtype_string`,
  `get_kv_cache_torch_dtype`): two bytes for bfloat16 and float16 models, and for FP8 weights too
  (`--quantization fp8` quantizes the weights, not the cache). `ModelShape.kv_cache_dtype` holds
  the flag; `model.KV_CACHE_BYTES` its width.
- KV heads per GPU: `max(1, total_kv_heads // tp)`, and 1 for MLA (`config/model.py`
  `get_num_kv_heads`); head size `head_dim`, for MLA `kv_lora_rank + qk_rope_head_dim`
  (`transformers_utils/model_arch_config_convertor.py` `get_head_size`).

LMCache 0.5.6 (the lmcache 0.5.6 wheel's `lmcache/`):
- A chunk is `(layers, 1 if MLA else 2, chunk_size, kv_heads_per_gpu, head_size)` elements of the
  KV dtype (`integration/vllm/vllm_service_factory.py`, `kv_shape`), and a decoder rank's PD
  buffer holds `pd_buffer_size // chunk bytes` of them (`v1/storage_backend/pd_backend.py`,
  `initialize_allocator`).
- MLA KV is stored by the first rank only (`save_only_first_rank` defaults to `use_mla`:
  `v1/cache_engine.py`, `v1/token_database.py`), so one prefiller rank sends it and sends one
  `ProxyNotif`; with GQA/MHA every rank sends its heads' share and a notification.
"""

from __future__ import annotations

from tandem.api.spec import AttentionKind
from tandem.planner.model import ModelShape


def kv_heads_per_gpu(model: ModelShape, tp: int) -> int:
    """KV heads each GPU keeps: a share of them, or one replica when TP exceeds their number."""
    return 1 if model.is_mla else max(1, model.num_kv_heads // tp)


def kv_bytes_per_token_per_gpu(model: ModelShape, tp: int, pp: int) -> float:
    """KV cache bytes one token takes on one GPU. MLA's latent is replicated, not split, by TP."""
    per_token = model.kv_bytes_per_token() / pp
    if model.is_mla:
        return per_token
    return per_token * kv_heads_per_gpu(model, tp) / model.num_kv_heads


def kv_bytes_per_token_all_ranks(model: ModelShape, tp: int, pp: int) -> int:
    """KV bytes one token takes on all of an engine's GPUs together: each rank's share, with GQA
    heads replicated where TP exceeds them and MLA's latent on every rank. The simulator's
    `--kv-bytes-per-token`, which it divides by TP x PP into each rank's (its PD buffer's chunks)."""
    return round(kv_bytes_per_token_per_gpu(model, tp, pp) * tp * pp)


def kv_sending_ranks(attention: AttentionKind, tp: int) -> int:
    """Prefiller TP ranks that send a handoff's KV, each with its own `ProxyNotif`: all of them,
    or, for MLA, the first alone."""
    return 1 if attention == AttentionKind.MLA else tp


def kv_transfer_streams(model: ModelShape, prefill_tp: int, decode_tp: int) -> int:
    """Parallel prefill->decode KV streams: one per TP rank pair for GQA; MLA's latent, replicated on
    every rank, moves once."""
    return min(kv_sending_ranks(model.attention, prefill_tp), decode_tp)


def lmcache_chunk_bytes(model: ModelShape, tp: int, chunk_size: int) -> int:
    """Bytes of one LMCache chunk of `chunk_size` tokens on one TP rank (pipeline parallelism 1, as
    LMCache PD requires)."""
    return round(chunk_size * kv_bytes_per_token_per_gpu(model, tp, 1))


def pd_buffer_chunks(model: ModelShape, tp: int, chunk_size: int, buffer_bytes: int) -> int:
    """Chunks a decoder rank's PD buffer of `buffer_bytes` (`pd_buffer_size`) holds."""
    return buffer_bytes // lmcache_chunk_bytes(model, tp, chunk_size)
