"""Request traces to replay: JSON Lines of ``{"t": seconds, "prompt_tokens": n, "output_tokens": m}``.

``t`` is the arrival time from the trace's start; other keys are ignored (a trace cut from request
logs may carry more). Blank lines are skipped. The entries are replayed in time order (a trace
merged from several logs need not be sorted).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class TraceError(ValueError):
    """A trace line that is not a valid entry; the message names the source and line."""


class TraceEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    t: float = Field(ge=0, allow_inf_nan=False)
    prompt_tokens: int = Field(ge=1)
    output_tokens: int = Field(ge=1)


def parse_trace(lines: Iterable[str], source: str = "trace") -> list[TraceEntry]:
    """The entries of a JSONL trace, sorted by ``t``; raises TraceError naming the bad line."""
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(TraceEntry.model_validate(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise TraceError(f"{source}:{number}: not JSON ({exc.msg})") from exc
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in exc.errors(include_url=False)
            )
            raise TraceError(f"{source}:{number}: {problems}") from exc
    if not entries:
        raise TraceError(f"{source}: the trace has no entries")
    return sorted(entries, key=lambda e: e.t)
