"""What the operator owns on an engine: the flags and environment variables users may not set."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Managed:
    """A vLLM flag or environment variable the operator owns: users set it through ``owner``, never
    in ``env`` or ``extraArgs`` (validation refuses it there, naming ``owner``)."""

    name: str
    owner: str  # the spec field that sets it, or why its value is fixed
    aliases: tuple[str, ...] = ()  # vLLM's short forms (vllm/engine/arg_utils.py)
