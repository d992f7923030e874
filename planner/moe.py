"""Mixture-of-experts layers over a replica's GPUs: what one GPU reads, computes and sends per pass.

A replica runs attention on `dp` data-parallel ranks of `tp` GPUs each (vLLM's
`--data-parallel-size`); its routed experts spread over all N = dp x tp GPUs, either sliced like
any tensor-parallel matrix (every GPU holds 1/N of every expert) or, with expert parallelism
(`--enable-expert-parallel`), whole: E / N experts per GPU (vllm/model_executor/layers/fused_moe/
config.py, `FusedMoEParallelConfig.make`: "flatten_tp_across_dp", then ep_size = that TP size).
With dp > 1 every MoE layer dispatches each token to the GPUs of its experts and combines their
outputs back (an all-to-all; `ParallelConfig.use_all2all`, vllm/config/parallel.py), through the
backend named by `--all2all-backend`.

Per pass over T tokens per DP rank (every rank alike: vLLM steps its DP ranks together, idle ones
with dummy batches), for all MoE layers of the model, one GPU:
- reads the routed-expert weights some token picked: 1/N of the experts' bytes times
  1 - (1 - k/E)^(dp T) (each of the E experts is missed by a token with probability 1 - k/E);
- computes 2 x 3 h w FLOPs per token-expert pair it holds, dp T k / N on average, and under EP
  the busiest GPU `imbalance` times that (the step waits for it); TP-sliced experts share every
  pair, so they see no imbalance;
- takes max(those bytes / (hbm x expert_mbu), those FLOPs / (peak x expert_mfu)), the grouped
  expert GEMMs' two bounds (measured on an H200: benchmarks/calibration/results/h200_moe.csv);
- moves each pair's hidden state in and out of expert order (permute / unpermute, `permute_eff`
  of HBM bandwidth, measured alike) and pays `moe_layer_overhead_us` per layer (router, top-k,
  sorting, the grouped GEMMs' fixed time);
- with dp > 1, sends and receives the dispatch and combine traffic: `a2a_latency_us` plus the
  slower of its NVLink share (within the node, `a2a_link_eff`) and its node-network share (to
  other nodes, `a2a_network_eff`), both directions of the link in parallel.

The imbalance: with n pairs per GPU on average and uniformly random routing, the busiest of N GPUs
gets about n + sqrt(2 n ln N) (the largest of N binomial counts, normal approximation); real routing
is skewed on top of that by `expert_skew`. Parameters and sources: calibration/defaults.yaml.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from tandem.planner.calibration import Calibration
from tandem.planner.gpu import GpuSpec
from tandem.planner.model import ACTIVATION_BYTES, DTYPE_BYTES, ModelShape

Phase = Literal["prefill", "decode", "aggregated"]
# FP8 dispatch sends one byte per element and one float32 scale per 128 (DeepEP's FP8 layout).
FP8_DISPATCH_BYTES = 1 + 4 / 128
# vLLM's DeepEP buffers: VLLM_DEEPEP_BUFFER_SIZE_MB, 1024 by default (vllm/envs.py).
DEEPEP_BUFFER_GIB = 1.0


@dataclass(frozen=True)
class All2AllBackend:
    """One of vLLM's `--all2all-backend` values (vllm/config/parallel.py, `All2AllBackend`)."""

    name: str
    phases: frozenset[Phase]  # the roles it is made for
    copies: Literal["every_rank", "per_rank", "per_pick"]  # what one token sends
    fp8_dispatch: bool  # dispatches FP8 activations when the experts are FP8
    buffer_gib: float  # GPU memory its communication buffers take
    needs_ep: bool


# allgather_reducescatter is vLLM's default and needs nothing beyond NCCL: every rank gathers every
# token and reduce-scatters the outputs. DeepEP's kernels send a token only where its experts are:
# high-throughput once per destination node over the network and once per rank within it (prefill;
# not CUDA-graph capturable), low-latency once
# per pick (decode; graph capturable). DeepEP needs expert parallelism, and its two modes cannot
# share one engine that both prefills and decodes with DP attention (SGLang, "Deploying DeepSeek
# with PD Disaggregation and Large-scale Expert Parallelism on 96 H100 GPUs", 2025-05-05, the
# dispatch-mode table): aggregated replicas use allgather_reducescatter.
ALL2ALL_BACKENDS: dict[str, All2AllBackend] = {
    b.name: b
    for b in (
        All2AllBackend(
            "allgather_reducescatter",
            frozenset({"prefill", "decode", "aggregated"}),
            "every_rank",
            fp8_dispatch=False,
            buffer_gib=0.0,
            needs_ep=False,
        ),
        All2AllBackend(
            "deepep_high_throughput",
            frozenset({"prefill"}),
            "per_rank",
            fp8_dispatch=True,
            buffer_gib=DEEPEP_BUFFER_GIB,
            needs_ep=True,
        ),
        All2AllBackend(
            "deepep_low_latency",
            frozenset({"decode"}),
            "per_pick",
            fp8_dispatch=True,
            buffer_gib=DEEPEP_BUFFER_GIB,
            needs_ep=True,
        ),
    )
}


def expert_bytes(model: ModelShape) -> float:
    """Bytes of the routed experts' weights (0 for a dense model)."""
    return model.routed_expert_params * DTYPE_BYTES[model.expert_weight_dtype or model.weight_dtype]


def routed_active_params(model: ModelShape) -> float:
    """Routed-expert parameters one token uses (the k experts it picks, in every MoE layer)."""
    if not model.is_moe:
        return 0.0
    return model.routed_expert_params * model.experts_per_token / model.num_experts


def touched_share(model: ModelShape, tokens: float) -> float:
    """Share of the routed experts some of `tokens` tokens pick: each of E experts is missed by one
    token with probability 1 - k/E."""
    miss: float = (1 - model.experts_per_token / model.num_experts) ** max(tokens, 1.0)
    return 1 - miss


def imbalance(pairs_per_gpu: float, gpus: int, skew: float) -> float:
    """The busiest GPU's token-expert pairs over the mean, for experts sharded over `gpus` GPUs."""
    if gpus <= 1:
        return 1.0
    n = max(pairs_per_gpu, 1e-9)
    return skew * (1 + math.sqrt(2 * math.log(gpus) / n))


class ExpertCost:
    """The MoE layers of one replica layout, their constants worked out once."""

    def __init__(
        self,
        model: ModelShape,
        gpu: GpuSpec,
        calibration: Calibration,
        *,
        tp: int,
        dp: int,
        ep: bool,
        backend: All2AllBackend | None,
        gpus_per_node: int,
    ) -> None:
        cal = self.calibration = calibration
        self.tp, self.dp, self.ep, self.backend = tp, dp, ep, backend
        self.gpus = dp * tp
        self.model = model
        self.top_k = model.experts_per_token
        moe_layers = model.num_layers - model.dense_layers
        self.moe_layers = moe_layers
        fp8 = (model.expert_weight_dtype or model.weight_dtype) == "fp8" and gpu.fp8_tflops is not None
        peak = gpu.peak_flops_per_ms(fp8)
        self.read_ms = expert_bytes(model) / self.gpus / (gpu.hbm_bytes_per_ms * cal.expert_mbu)
        pair_flops = 2 * model.mlp_matrices * model.hidden_size * model.expert_width * moe_layers
        self.pair_ms = pair_flops / (peak * cal.expert_mfu)
        row_bytes = model.hidden_size * ACTIVATION_BYTES
        # Permute and unpermute each write and read a row per pair (and a row per token).
        self.permute_ms_per_pair = (
            2 * 2 * row_bytes * (1 + 1 / self.top_k) * moe_layers / (gpu.hbm_bytes_per_ms * cal.permute_eff)
        )
        self.fixed_ms = moe_layers * cal.moe_layer_overhead_us / 1000
        self.dispatch_row = model.hidden_size * (
            FP8_DISPATCH_BYTES if backend is not None and backend.fp8_dispatch and fp8 else ACTIVATION_BYTES
        )
        self.combine_row = row_bytes
        self.node_gpus = min(self.gpus, gpus_per_node)
        self.link_bytes_per_ms = gpu.link_bytes_per_ms * cal.a2a_link_eff
        self.network_bytes_per_ms = gpu.network_bytes_per_ms * cal.a2a_network_eff
        self._passes: dict[float, float] = {}

    def pass_ms(self, tokens: float) -> float:
        """All MoE layers of one pass in which every DP rank brings `tokens` tokens (each count
        worked out once: a sizing asks for many steps of one batch and chunk)."""
        ms = self._passes.get(tokens)
        if ms is None:
            ms = self._passes[tokens] = self._pass_ms(tokens)
        return ms

    def _pass_ms(self, tokens: float) -> float:
        if tokens <= 0:
            return 0.0
        routed = tokens * self.dp  # tokens the whole replica routes
        touched = touched_share(self.model, routed)
        if self.ep:  # a GPU computes its experts' pairs whole; the step waits for the busiest
            pairs = routed * self.top_k / self.gpus
            busiest = imbalance(pairs, self.gpus, self.calibration.expert_skew)
            rows = pairs * busiest
            flops_ms = rows * self.pair_ms
        else:  # every GPU computes 1/N of every pair
            busiest = 1.0
            rows = routed * self.top_k
            flops_ms = routed * self.top_k * self.pair_ms / self.gpus
        experts_ms = max(self.read_ms * touched, flops_ms)
        local_ms = rows * self.permute_ms_per_pair
        return experts_ms + local_ms + self.fixed_ms + self.all_to_all_ms(tokens, busiest)

    def all_to_all_ms(self, tokens: float, busiest: float = 1.0) -> float:
        """Dispatch and combine of all MoE layers, `tokens` per DP rank (0 without DP)."""
        if self.backend is None or self.dp == 1:
            return 0.0
        sent = tokens / self.tp * busiest  # tokens one GPU sends; the busiest receives more
        local, remote = self._rows_per_token()
        cal = self.calibration
        total = 0.0
        for row_bytes in (self.dispatch_row, self.combine_row):
            over_link = sent * local * row_bytes / self.link_bytes_per_ms
            over_network = sent * remote * row_bytes / self.network_bytes_per_ms
            total += cal.a2a_latency_us / 1000 + max(over_link, over_network)
        return self.moe_layers * total

    def _rows_per_token(self) -> tuple[float, float]:
        """Rows one token sends to the other GPUs of its node and to other nodes."""
        assert self.backend is not None
        n, g, k = self.gpus, self.node_gpus, self.top_k
        if self.backend.copies == "every_rank":
            return float(g - 1), float(n - g)
        if self.backend.copies == "per_pick":
            return k * (g - 1) / n, k * (n - g) / n
        # Once per destination rank within the node, once per destination node over the network
        # (DeepEP's normal kernels forward from the RDMA to the NVLink domain).
        nodes = n / g
        local = (g - 1) * (1 - (1 - 1 / n) ** k)
        remote = nodes * (1 - (1 - 1 / nodes) ** k) * (nodes - 1) / nodes
        return local, remote
