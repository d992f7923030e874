"""Engine timing: how fast one engine instance prefills and decodes.

The planner produces it per role from its cost model (for the planned GPU, TP and PP); the
simulator consumes it so that a simulated pool behaves like the planned hardware. It is the
contract between the two, so it lives here, in the package both may import.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# A point of the MoE layers' time: (tokens in the pass, ms).
MoePoint = tuple[float, float]


class EngineTiming(BaseModel):
    """Linearised cost of one engine instance. All times in milliseconds.

    prefill(batch of prompts, total T tokens, lengths L_i) =
        prefill_base_ms + prefill_ms_per_token * T + prefill_ms_per_token_sq * sum(L_i^2)
    decode_step(batch B, total context C tokens) =
        decode_step_base_ms + decode_ms_per_seq * B + decode_ms_per_kilotoken * C / 1000
    A step takes the longer of the two for its tokens, plus, for an MoE model, its routed experts:
    moe_ms(tokens of the step), interpolated between `moe_pass_ms` points. The experts are not
    linear in the tokens (a pass reads the experts some token picked, a share that saturates with
    the tokens: tandem.planner.moe), so the planner gives their time at token counts instead.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefill_base_ms: float = Field(default=5.0, ge=0)
    prefill_ms_per_token: float = Field(default=0.05, ge=0)
    prefill_ms_per_token_sq: float = Field(default=0.0, ge=0)
    decode_step_base_ms: float = Field(default=8.0, ge=0)
    decode_ms_per_seq: float = Field(default=0.05, ge=0)
    decode_ms_per_kilotoken: float = Field(default=0.01, ge=0)
    kv_transfer_ms_per_token: float = Field(default=0.002, ge=0, description="prefill→decode KV move")
    offload_load_ms_per_token: float = Field(
        default=0.003, ge=0, description="a prompt token's KV loaded from LMCache's CPU tier to the GPU"
    )
    max_num_seqs: int = Field(default=256, ge=1)
    max_num_batched_tokens: int = Field(default=8192, ge=1)
    kv_capacity_tokens: int = Field(default=262_144, ge=1)
    moe_pass_ms: tuple[MoePoint, ...] = Field(
        default=(),
        description="MoE: (step tokens, ms) of the routed experts (reads, GEMMs, permute, all-to-all), "
        "tokens ascending; empty for a dense model. As a flag: 'tokens:ms,tokens:ms,...'.",
    )

    @field_validator("moe_pass_ms", mode="before")
    @classmethod
    def _points(cls, value: Any) -> Any:
        """Also from the flag's text: 'tokens:ms,...'."""
        if isinstance(value, str):
            try:
                return tuple(tuple(float(x) for x in point.split(":")) for point in value.split(",") if point)
            except ValueError as exc:
                raise ValueError(f"moe_pass_ms {value!r} is not 'tokens:ms,tokens:ms,...'") from exc
        return value

    @field_validator("moe_pass_ms")
    @classmethod
    def _ascending(cls, points: tuple[MoePoint, ...]) -> tuple[MoePoint, ...]:
        tokens = [t for t, _ in points]
        if any(t <= 0 for t in tokens) or tokens != sorted(set(tokens)) or any(ms < 0 for _, ms in points):
            raise ValueError("moe_pass_ms needs positive, strictly ascending tokens and non-negative ms")
        return points

    def moe_ms(self, tokens: float) -> float:
        """The routed experts of a step over `tokens` tokens: linear between the points (and from
        0 ms at 0 tokens to the first), along the last segment beyond the last."""
        if not self.moe_pass_ms or tokens <= 0:
            return 0.0
        knots = ((0.0, 0.0), *self.moe_pass_ms)
        # The segment that holds `tokens`, or the last one.
        index = next((i for i, (t, _) in enumerate(knots) if i and tokens <= t), len(knots) - 1)
        (t0, ms0), (t1, ms1) = knots[index - 1], knots[index]
        return ms0 + (ms1 - ms0) * (tokens - t0) / (t1 - t0)

    def flags(self) -> dict[str, str]:
        """The timing as command-line values, by field name (an empty MoE table left out)."""
        values: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if name == "moe_pass_ms":
                if value:
                    values[name] = ",".join(f"{t:g}:{ms:.6g}" for t, ms in value)
            else:
                values[name] = str(value)
        return values

    def prefill_ms(self, prompt_tokens: int) -> float:
        """One prompt's prefill, alone in its batch."""
        return (
            self.prefill_base_ms
            + self.prefill_ms_per_token * prompt_tokens
            + self.prefill_ms_per_token_sq * prompt_tokens * prompt_tokens
            + self.moe_ms(prompt_tokens)
        )

    def decode_share_ms(self, prompt_tokens: int, output_tokens: int) -> float:
        """One answer's share of the decode steps of a full batch (`max_num_seqs` sequences share
        each step's base and routed experts), at its mean context (the prompt and half the answer)."""
        context = prompt_tokens + output_tokens / 2
        per_step = (
            (self.decode_step_base_ms + self.moe_ms(self.max_num_seqs)) / self.max_num_seqs
            + self.decode_ms_per_seq
            + self.decode_ms_per_kilotoken * context / 1000
        )
        return output_tokens * per_step
