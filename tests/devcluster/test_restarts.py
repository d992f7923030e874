"""When the kubelet starts a container again, and how long it waits first."""

from __future__ import annotations

import pytest

from tandem.devcluster.containers import Backoff, restarts


@pytest.mark.parametrize(
    ("policy", "exit_code", "init", "again"),
    [
        ("Always", 0, False, True),
        ("Always", 1, False, True),
        ("OnFailure", 0, False, False),
        ("OnFailure", 2, False, True),
        ("Never", 2, False, False),
        ("Always", 0, True, False),  # an init container that succeeded is done
        ("Always", 1, True, True),
        ("Never", 1, True, False),
    ],
)
def test_restart_policy(policy: str, exit_code: int, init: bool, again: bool) -> None:
    assert restarts(policy, exit_code, init) is again


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(initial=1.0, maximum=10.0)
    assert [backoff.delay(crashes) for crashes in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
