"""The twin on the devcluster (benchmarks/twin/cluster.py) in its quick form: the RAG workload on
Llama-3.1-8B planned by the operator, served by simulator engines behind the router, loaded with
``tandem load`` at the planned rate for 30 s. The plan's queues stay bounded and, unless its engines
were starved of CPU (the run says so, and then the latencies measure the machine), the measured p90
TTFT and ITL are within 0.75-1.25 of its predictions. About 90 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO

from tandem.devcluster.assets import find_assets
from tandem.devcluster.errors import AssetsMissingError

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

TWIN = REPO / "benchmarks" / "twin" / "cluster.py"


def _needs_devcluster() -> None:
    try:
        find_assets(None)
    except AssetsMissingError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{exc} (CI=true: the control plane must be available)")
        pytest.skip(str(exc))
    if os.geteuid() != 0:
        pytest.skip("the devcluster runs pods in private mount namespaces, which needs root")


@pytest.mark.timeout(300)
def test_the_quick_cluster_twin_holds_the_rag_plan_to_its_predictions(tmp_path: Path) -> None:
    _needs_devcluster()
    figures = tmp_path / "twin.json"
    run = subprocess.run(
        [sys.executable, str(TWIN), "--quick", "--json", str(figures), "--work-dir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert figures.exists(), f"the twin did not finish:\n{run.stdout}\n{run.stderr[-5000:]}"
    result = json.loads(figures.read_text())
    (row,) = result["accuracy"]
    assert row["workload"] == "rag-8b"
    assert row["requests"] >= 150, row
    assert row["bounded"], run.stdout
    assert "decode" in row["cpu"] and "router" in row["cpu"], row
    if not row["starved"]:
        assert all(0.75 <= ratio <= 1.25 for ratio in row["ratios"]), run.stdout
        assert run.returncode == 0, run.stdout
