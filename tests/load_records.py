"""Four hand-made request records and an SLO, the load generator's figures are checked against."""

from __future__ import annotations

from tandem.api import SloSpec
from tandem.load.records import ErrorKind, RequestRecord

# Four requests (times in s). r1 misses TTFT, r2 fails, r3 is a single token that waited for a slot.
RECORDS = [
    RequestRecord(
        index=0, scheduled_s=0.0, prompt_tokens=10, output_tokens=3, sent_s=0.0, ended_s=0.15,
        ttft_s=0.1, itl_s=(0.02, 0.03), latency_s=0.15, server_prompt_tokens=10, server_output_tokens=3,
        finish_reason="length",
    ),
    RequestRecord(
        index=1, scheduled_s=1.0, prompt_tokens=20, output_tokens=2, sent_s=1.0, ended_s=1.55,
        ttft_s=0.5, itl_s=(0.05,), latency_s=0.55, server_output_tokens=2, finish_reason="length",
    ),
    RequestRecord(
        index=2, scheduled_s=2.0, prompt_tokens=5, output_tokens=2, sent_s=2.0, ended_s=2.01,
        error=ErrorKind.HTTP, status=503, detail="unhealthy",
    ),
    RequestRecord(
        index=3, scheduled_s=2.9, prompt_tokens=30, output_tokens=1, held=True, sent_s=3.0, ended_s=3.2,
        ttft_s=0.2, latency_s=0.2, server_prompt_tokens=31, server_output_tokens=1, finish_reason="length",
    ),
]  # fmt: skip
SLO = SloSpec(ttft_ms=300, itl_ms=40, percentile=50)
