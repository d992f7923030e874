"""`tandem plan`: JSON and table output, exit status, and clear errors for bad requests."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tandem.cli import main

BRIEF_EXAMPLE = [
    "plan", "--model", "meta-llama/Llama-3.1-70B-Instruct", "--gpu", "H100-80GB", "--ttft-ms", "1000",
    "--itl-ms", "50", "--rps", "5", "--prompt-tokens", "4000", "--output-tokens", "300",
]  # fmt: skip


def test_json_plan_is_printed_for_the_documented_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BRIEF_EXAMPLE, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["feasible"] is True
    assert plan["model"] == "meta-llama/Llama-3.1-70B"
    assert plan["decode"]["engine_timing"]["kv_capacity_tokens"] > 0
    assert plan["predicted_ttft_ms"] <= 1000 and plan["predicted_itl_ms"] <= 50
    assert {"disaggregated", "aggregated", "rationale", "prompt_tokens_threshold"} <= set(plan)


def test_table_is_the_default_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(BRIEF_EXAMPLE) == 0
    out = capsys.readouterr().out
    assert out.startswith("Plan for meta-llama/Llama-3.1-70B:")
    assert "Disaggregated" in out and "Aggregated" in out and "H100-80GB" in out


def test_separate_prefill_and_decode_gpus(capsys: pytest.CaptureFixture[str]) -> None:
    roles = ["--prefill-gpu", "H200", "--decode-gpu", "A100-80GB", "--mode", "Always"]
    assert main(["plan", "--model", "llama-3.1-70b", *roles, "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert (plan["prefill"]["gpu_type"], plan["decode"]["gpu_type"]) == ("H200-141GB", "A100-80GB")


def test_infeasible_plan_prints_its_reason_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "llama-3.1-70b", "--gpu", "L4", "--gpus-per-node", "1"]) == 1
    out = capsys.readouterr().out
    assert "INFEASIBLE" in out and "floor" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--model acme/nothing --gpu H100", "unknown model 'acme/nothing'"),
        ("--model llama-3.1-8b --gpu B300", "unknown GPU type 'B300'"),
        ("--model llama-3.1-8b", "give --gpu"),
        ("--model llama-3.1-8b --gpu H100 --prompt-tokens 100 --prompt-tokens-p90 50", "p90"),
        ("--model llama-3.1-8b --gpu H100 --prefix-reuse 2", "prefix_reuse_fraction"),
    ],
)
def test_bad_requests_exit_2_with_a_message(
    args: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["plan", *args.split()]) == 2
    assert message in capsys.readouterr().err


def test_non_positive_numbers_are_rejected_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["plan", "--model", "llama-3.1-8b", "--gpu", "H100", "--rps", "0"])
    assert exited.value.code == 2
    assert "must be positive" in capsys.readouterr().err


def test_plan_is_a_subcommand_of_the_tandem_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "plan", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "--prompt-tokens-p90" in result.stdout
