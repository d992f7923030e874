"""`tandem plan`: JSON and table output, exit status, and clear errors for bad requests."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from paths import REPO

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
    args = ["plan", "--model", "llama-3.1-70b", "--gpu", "L4", "--gpus-per-node", "1", "--connector", "nixl"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "INFEASIBLE" in out and "floor" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--model acme/nothing --gpu H100", "unknown model 'acme/nothing'"),
        ("--model llama-3.1-8b --gpu B300", "unknown GPU type 'B300'"),
        ("--model llama-3.1-8b", "give --gpu"),
        ("--gpu H100", "give --model (or -f with an InferencePool manifest)"),
        ("--model llama-3.1-8b --gpu H100 --prompt-tokens 100 --prompt-tokens-p90 50", "p90"),
        (
            "--model llama-3.1-8b --gpu H100 --prompt-tokens 1000 --prompt-tokens-p90 5000",
            "--prompt-tokens 1000 and --prompt-tokens-p90 5000: p90 (5000) is 5.00 times mean (1000), "
            "but a log-normal's p90 is at most 2.27 times its mean",
        ),
        ("--model llama-3.1-8b --gpu H100 --output-tokens 300 --output-tokens-p90 800", "at most 681"),
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


SIMULATOR_POOL = REPO / "examples" / "simulator-pool.yaml"


def test_a_pool_file_is_planned_from_stdin_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(SIMULATOR_POOL.read_text()))
    assert main(["plan", "-f", "-"]) == 0
    assert capsys.readouterr().out.startswith("Plan for meta-llama/Llama-3.1-8B: Disaggregated")


@pytest.mark.parametrize(
    ("manifest", "extra", "message"),
    [
        (None, ["--rps", "3"], "-f plans the file as the operator does; drop --rps"),
        (
            "kind: Deployment\napiVersion: apps/v1\n",
            [],
            "expected one InferencePool (tandem.dev/v1alpha1), found 0",
        ),
        ("{{", [], "pool.yaml: while parsing"),
        (
            "ttftMs: 1000|ttftMs: -1",
            [],
            "invalid spec (InvalidSpec): spec.slo.ttftMs: Input should be greater than 0",
        ),
        ("name: sim-llama|name: ''", [], "pool.yaml: the InferencePool has no metadata.name"),
        ("name: meta-llama/Llama-3.1-8B-Instruct|name: acme/nothing", [], "unknown model 'acme/nothing'"),
    ],
)
def test_a_pool_file_that_cannot_be_planned_exits_2_naming_why(
    manifest: str | None, extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = SIMULATOR_POOL.read_text()
    if manifest is not None:
        old, _, new = manifest.partition("|")
        text = text.replace(old, new) if new else manifest
    path = tmp_path / "pool.yaml"
    path.write_text(text)
    assert main(["plan", "-f", str(path), *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("edit", "code", "message"),
    [
        (
            {"engine": {"type": "simulator", "env": [{"name": "PYTHONHASHSEED", "value": "1"}]}},
            2,
            "invalid spec (InvalidSpec): spec.engine.env[0].name: PYTHONHASHSEED is managed by the operator",
        ),
        ({"maxGpus": 1}, 1, "the pool needs 2 GPUs, over the budget of 1 (spec.maxGpus)"),
    ],
)
def test_a_pool_file_the_operator_would_refuse_is_refused_the_same_way(
    edit: dict[str, object], code: int, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: `tandem plan -f` ran the planner only, so a file printed a plan that the operator then
    refused (managed env names, the GPU budget)."""
    manifest = yaml.safe_load(SIMULATOR_POOL.read_text())
    for key, value in edit.items():
        if isinstance(value, dict) and isinstance(manifest["spec"].get(key), dict):
            manifest["spec"][key].update(value)
        else:
            manifest["spec"][key] = value
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(manifest))
    assert main(["plan", "-f", str(path)]) == code
    printed = capsys.readouterr()
    assert message in printed.out + printed.err
