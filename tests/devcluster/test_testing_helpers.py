"""The helpers other tests lean on: wait_for and per-test namespace names."""

from __future__ import annotations

import re

import pytest
from kubernetes.client import ApiException

from tandem.devcluster.testing import namespace_name, wait_for


def test_wait_for_returns_the_first_truthy_result() -> None:
    answers = iter([None, 0, "", "ready"])
    assert wait_for(lambda: next(answers), timeout=5, interval=0.01) == "ready"


def test_wait_for_fails_with_the_message_and_the_last_api_error() -> None:
    def missing() -> None:
        raise ApiException(status=404, reason="Not Found")

    with pytest.raises(
        pytest.fail.Exception, match=r"pod web Ready \(timed out after 0.05s; last API error: 404 Not Found\)"
    ):
        wait_for(missing, timeout=0.05, interval=0.01, message="pod web Ready")


@pytest.mark.parametrize(
    "test_name",
    ["test_x", "test_unrunnable_image[docker.io/library/nginx:1.25-None]", "test_" + "very_long_name_" * 10],
)
def test_namespace_names_are_unique_dns_labels(test_name: str) -> None:
    first, second = namespace_name(test_name), namespace_name(test_name)
    assert first != second
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", first)
    assert len(first) <= 63
