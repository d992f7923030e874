"""The summary's JSON speaks ``vllm bench serve --save-result``'s keys; its text shows the figures."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from load_records import RECORDS, SLO

from tandem.load.report import summary_json, summary_text
from tandem.load.stats import summarize, windows

# vLLM 0.33.0's benchmarks/serve.py, from the unzipped wheel (`pip download --no-deps vllm==0.33.0`)
# named by TANDEM_VLLM_SOURCE (the folder holding `vllm/`); the check is skipped without it, since
# nothing downloads at test time.
VLLM_SERVE = Path(os.environ.get("TANDEM_VLLM_SOURCE", "/nonexistent")) / "vllm" / "benchmarks" / "serve.py"
SHARED = {
    "duration", "completed", "failed", "total_input_tokens", "total_output_tokens", "request_throughput",
    "request_goodput", "output_throughput", "total_token_throughput",
}  # fmt: skip


def test_the_shared_keys_are_the_ones_vllm_writes() -> None:
    """vllm/benchmarks/serve.py, benchmark(): ``result = {"duration": …, "completed": …}`` and
    ``process_one_metric``: ``mean_/median_/std_{metric}_ms`` and ``p{p_word}_{metric}_ms``."""
    if not VLLM_SERVE.is_file():
        pytest.skip("TANDEM_VLLM_SOURCE does not name an unzipped vllm 0.33.0 wheel")
    source = VLLM_SERVE.read_text()
    written = set(re.findall(r'^\s+"([a-z_]+)": (?:benchmark_duration|metrics\.)', source, re.MULTILINE))
    assert written >= SHARED
    assert 'result[f"p{p_word}_{metric_attribute_name}_ms"] = value' in source
    assert "p_word = str(int(p)) if int(p) == p else str(p)" in source
    for metric in ("ttft", "tpot", "itl", "e2el"):
        assert f'process_one_metric("{metric}"' in source


def test_the_json_carries_vllms_keys_with_our_figures() -> None:
    summary = summarize(RECORDS, SLO, percentiles=(50, 90, 99.9))
    data = json.loads(json.dumps(summary_json(summary, {"url": "http://x"}, windows(RECORDS, 1.0, SLO))))
    assert set(data) >= SHARED
    assert (data["completed"], data["failed"], data["duration"]) == (3, 1, 3.2)
    assert data["request_goodput"] == summary.slo.goodput
    for metric in ("ttft", "tpot", "itl", "e2el"):
        assert {f"mean_{metric}_ms", f"median_{metric}_ms", f"std_{metric}_ms", f"p50_{metric}_ms",
                f"p90_{metric}_ms", f"p99.9_{metric}_ms"} <= set(data)  # fmt: skip
    assert data["p90_ttft_ms"] == summary.ttft_ms.percentiles[90]  # type: ignore[union-attr]
    assert data["errors_by_kind"] == {"http 503": 1}
    assert data["slo"]["attainment"] == 0.5 and data["slo"]["met"] is True
    assert data["url"] == "http://x" and len(data["windows"]) == 4


def test_the_text_shows_counts_errors_latencies_and_the_verdict() -> None:
    text = summary_text(summarize(RECORDS, SLO), [("Target", "http://x")], max_concurrency=8)
    assert "Requests" in text and "4 (completed 3, failed 1)" in text
    assert re.search(r"^  http 503 +1$", text, re.MULTILINE)
    assert re.search(r"^TTFT +266\.67 ", text, re.MULTILINE)
    assert "attainment" in text and "50.0% (2 of 4): met" in text
    assert "1 arrivals waited for an in-flight slot" in text
