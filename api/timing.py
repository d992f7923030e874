"""Engine timing: how fast one engine instance prefills and decodes.

The planner produces it per role from its cost model (for the planned GPU, TP and PP); the
simulator consumes it so that a simulated pool behaves like the planned hardware. It is the
contract between the two, so it lives here, in the package both may import.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EngineTiming(BaseModel):
    """Linearised cost of one engine instance. All times in milliseconds.

    prefill(batch of prompts, total T tokens, lengths L_i) =
        prefill_base_ms + prefill_ms_per_token * T + prefill_ms_per_token_sq * sum(L_i^2)
    decode_step(batch B, total context C tokens) =
        decode_step_base_ms + decode_ms_per_seq * B + decode_ms_per_kilotoken * C / 1000
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefill_base_ms: float = Field(default=5.0, ge=0)
    prefill_ms_per_token: float = Field(default=0.05, ge=0)
    prefill_ms_per_token_sq: float = Field(default=0.0, ge=0)
    decode_step_base_ms: float = Field(default=8.0, ge=0)
    decode_ms_per_seq: float = Field(default=0.05, ge=0)
    decode_ms_per_kilotoken: float = Field(default=0.01, ge=0)
    kv_transfer_ms_per_token: float = Field(default=0.002, ge=0, description="prefill→decode KV move")
    max_num_seqs: int = Field(default=256, ge=1)
    max_num_batched_tokens: int = Field(default=8192, ge=1)
    kv_capacity_tokens: int = Field(default=262_144, ge=1)
