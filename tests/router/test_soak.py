"""The soak (benchmarks/router_soak.py) in its quick form: 300 requests through `tandem router` in
front of simulator processes whose faults change every few seconds. Every request the router
accepted completes or fails with an explicit error, none is lost, and every decoder's PD buffer is
free afterwards. The run is checked to have met its faults, so a schedule that no longer bites
cannot pass for a clean one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from paths import REPO

pytestmark = pytest.mark.slow

SOAK = REPO / "benchmarks" / "router_soak.py"


@pytest.mark.timeout(600)
def test_no_request_the_router_accepts_is_lost_while_its_engines_fail(tmp_path: Path) -> None:
    figures = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(SOAK), "--quick", "--json", str(figures), "--keep-logs", str(tmp_path / "logs")],
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert figures.exists(), f"the soak did not finish:\n{run.stdout}\n{run.stderr[-5000:]}"
    (result,) = json.loads(figures.read_text())
    assert run.returncode == 0, run.stdout
    assert (result["lost"], result["refused"], result["leaks"]) == (0, 0, {}), run.stdout
    assert result["accepted"] == result["streams"] == 300
    total = result["completed"] + result["failed_explicitly"] + result["left_by_client"] + result["lost"]
    assert total == result["accepted"]
    assert result["completed"] >= 0.8 * result["accepted"], run.stdout
    # Both routes were taken, and the faults acted: engine counters, a restart, the router's view.
    assert result["routes"].get("pd", 0) > 0 and result["routes"].get("direct", 0) > 0
    assert {"error", "close", "drop_notifications", "junk_notification", "trickle"} <= set(
        result["faults_injected"]
    ), run.stdout
    assert result["engine_restarts"] == {"decode-2": 1}
    assert result["router"]["retries_handoff"] > 0 and result["router"]["kv_notify_disconnects"] > 0
    for state in result["decoder_buffers_after"].values():
        assert state["free"] == state["capacity"] and not state["reserved"]
