"""``tandem load`` against real simulator processes (and the router in front of one).

The figures are checked against the server's own accounting (its vLLM counters: requests, prompt
and generated tokens) and its timing model (``EngineTiming``: no TTFT below the modelled prefill, no
time per token below the modelled decode step), never against the wall clock's upper end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from prometheus_text import metric_sum

from tandem.cli import main
from tandem.load.prompts import PROBE_WORDS
from tandem.sim.testing import SimProcess, free_port, sim_process

pytestmark = pytest.mark.slow

SPEED = 10
PREFILL_BASE_MS, PREFILL_MS_PER_TOKEN, DECODE_STEP_BASE_MS = 100.0, 0.05, 40.0
OUTPUT_TOKENS = 16


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    timing = ["--prefill-base-ms", str(PREFILL_BASE_MS), "--prefill-ms-per-token", str(PREFILL_MS_PER_TOKEN)]
    timing += ["--decode-step-base-ms", str(DECODE_STEP_BASE_MS)]
    with sim_process("--speed", str(SPEED), "--uvicorn-log-level", "warning", *timing) as process:
        yield process


def run_load(url: str, tmp_path: Path, *extra: str) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    out = ["--json", str(tmp_path / "s.json"), "--records", str(tmp_path / "r.jsonl"), "--no-progress"]
    assert main(["load", url, *extra, *out]) == 0
    records = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    return json.loads((tmp_path / "s.json").read_text()), records, url


def server_counts(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        name: metric_sum(text, f"vllm:{name}")
        for name in ("request_success_total", "prompt_tokens_total", "generation_tokens_total")
    }


def test_counts_add_up_and_match_the_servers_own(
    sim: SimProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = server_counts(sim.url)
    chart = tmp_path / "run.png"
    summary, records, _ = run_load(
        sim.url, tmp_path, "--rate", "10", "--duration", "3", "--prompt-tokens", "mean=200,p90=400",
        "--output-tokens", str(OUTPUT_TOKENS), "--seed", "5", "--chart", str(chart),
    )  # fmt: skip
    after = server_counts(sim.url)
    assert summary["requests"] == summary["sent"] == len(records) == summary["completed"] + summary["failed"]
    assert summary["failed"] == 0 and summary["held"] == 0 and summary["requests"] > 10
    assert all(r["scheduled_s"] < 3 for r in records)
    # The server saw each request plus the two calibration probes (one token each).
    assert after["request_success_total"] - before["request_success_total"] == summary["completed"] + 2
    assert (
        after["generation_tokens_total"] - before["generation_tokens_total"]
        == summary["total_output_tokens"] + 2
    )
    probe_prompt_tokens = sum(PROBE_WORDS)
    assert (
        after["prompt_tokens_total"] - before["prompt_tokens_total"]
        == summary["total_input_tokens"] + probe_prompt_tokens
    )
    modelled_ttft_s = modelled_latency_s = 0.0
    for r in records:
        assert r["server_prompt_tokens"] == r["prompt_tokens"]  # exact lengths
        assert r["server_output_tokens"] == OUTPUT_TOKENS  # ignore_eos: no early stop
        assert len(r["itl_s"]) <= OUTPUT_TOKENS - 1
        assert sum(r["itl_s"]) == pytest.approx(r["latency_s"] - r["ttft_s"])
        # The first token comes out of the prefill step, each further one out of a decode step.
        prefill_s = (PREFILL_BASE_MS + PREFILL_MS_PER_TOKEN * r["prompt_tokens"]) / 1000 / SPEED
        modelled_ttft_s += prefill_s
        modelled_latency_s += prefill_s + (OUTPUT_TOKENS - 1) * DECODE_STEP_BASE_MS / 1000 / SPEED
    # Summed, not per request: the simulator keeps its step deadlines on a running clock (a step
    # after one the loaded machine made late is shorter: sim/engine.py), so only totals hold.
    assert sum(r["ttft_s"] for r in records) >= modelled_ttft_s
    assert sum(r["latency_s"] for r in records) >= modelled_latency_s
    assert summary["mean_ttft_ms"] >= PREFILL_BASE_MS / SPEED
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.size[0] >= 800
    text = capsys.readouterr().out
    assert "Prompt tokens" in text and "(exact)" in text and "attainment" in text


def test_errors_are_counted_by_kind(sim: SimProcess, tmp_path: Path) -> None:
    httpx.post(
        f"{sim.url}/admin/faults", json={"error_rate": 0.5, "error_status": 503}, timeout=5
    ).raise_for_status()
    try:
        summary, records, _ = run_load(
            sim.url,
            tmp_path,
            "--rate",
            "20",
            "--max-requests",
            "40",
            "--prompt-tokens",
            "50",
            "--output-tokens",
            "4",
        )
    finally:
        httpx.post(f"{sim.url}/admin/faults", json={}, timeout=5).raise_for_status()
    failed = [r for r in records if r["error"]]
    assert summary["requests"] == 40 == summary["completed"] + summary["failed"]
    assert summary["errors_by_kind"] == {"http 503": len(failed)} and 5 < len(failed) < 35
    assert all(r["status"] == 503 and r["ttft_s"] is None for r in failed)
    assert summary["slo"]["good"] <= summary["completed"]


def test_a_trace_is_replayed_through_the_chat_endpoint(sim: SimProcess, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    entries = [{"t": 0.1 * i, "prompt_tokens": 40 + 30 * i, "output_tokens": 2 + i} for i in range(8)]
    trace.write_text("".join(json.dumps(e) + "\n" for e in entries))
    summary, records, _ = run_load(sim.url, tmp_path, "--trace", str(trace), "--endpoint", "chat")
    assert summary["completed"] == 8
    assert [(r["server_prompt_tokens"], r["server_output_tokens"]) for r in records] == [
        (e["prompt_tokens"], e["output_tokens"]) for e in entries
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--schedule", "5"], "RATE:DURATION"),
        (["--prompt-tokens", "mean=10,p90=5"], "must not be below mean"),
        (["--slo-itl-stat", "p0"], "mean, max or pNN"),
        (["--rate", "0"], "positive"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["load", "http://127.0.0.1:1", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--burstiness", "2"], "drop --burstiness"),
        (["--prompt-tokens", "5"], "drop --prompt-tokens"),
    ],
)
def test_a_trace_takes_no_synthetic_options(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"t": 0, "prompt_tokens": 5, "output_tokens": 1}\n')
    assert main(["load", "http://127.0.0.1:1", "--trace", str(trace), *extra]) == 2
    assert message in capsys.readouterr().err


def test_trace_speed_needs_a_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", "http://127.0.0.1:1", "--trace-speed", "2"]) == 2
    assert "--trace-speed needs --trace" in capsys.readouterr().err


def test_a_bad_trace_exits_2_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "bad.jsonl"
    trace.write_text('{"t": 0, "prompt_tokens": 5, "output_tokens": 1}\n{"t": 1}\n')
    assert main(["load", "http://127.0.0.1:1", "--trace", str(trace)]) == 2
    assert f"{trace}:2: prompt_tokens: Field required" in capsys.readouterr().err


def test_an_unreachable_server_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", f"http://127.0.0.1:{free_port()}", "--max-requests", "1", "--no-progress"]) == 1
    assert "cannot reach" in capsys.readouterr().err


@pytest.fixture
def router(sim: SimProcess) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable, "-m", "tandem.cli", "router", "--host", "127.0.0.1", "--port", str(port),
        "--notify-port", str(free_port()), "--static-decode", sim.url, "--served-model", "tandem/sim-model",
        "--mode", "Never", "--log-level", "warning",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
        try:
            url = f"http://127.0.0.1:{port}"
            SimProcess(process, port, Path(os.devnull)).wait_healthy(30)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_through_the_router_lengths_stay_exact(router: str, tmp_path: Path) -> None:
    summary, records, _ = run_load(
        router, tmp_path, "--rate", "10", "--max-requests", "12", "--prompt-tokens", "uniform=20-300",
        "--output-tokens", "5",
    )  # fmt: skip
    assert summary["completed"] == 12 and summary["failed"] == 0
    assert all(r["server_prompt_tokens"] == r["prompt_tokens"] for r in records)
    assert summary["model_id"] == "tandem/sim-model"
