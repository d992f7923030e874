"""One registry per policy kind, keyed by the API's names; docs/add-a-balance-policy.md and
docs/add-an-admission-policy.md list exactly the registered policies and their modules."""

from __future__ import annotations

import re
from enum import StrEnum

import pytest
from paths import REPO

from tandem.api.spec import AdmissionPolicy, BalancePolicy
from tandem.router.admission import ADMISSION
from tandem.router.decision.balance import BALANCE

ROOT = REPO
KINDS: dict[str, tuple[type[StrEnum], dict[object, object], str]] = {
    "balance": (BalancePolicy, dict(BALANCE), "add-a-balance-policy.md"),
    "admission": (AdmissionPolicy, dict(ADMISSION), "add-an-admission-policy.md"),
}


def _rows(page: str) -> list[list[str]]:
    section = (ROOT / "docs" / page).read_text().split("## Policies", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in row] for row in rows]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_registry_covers_every_name_of_the_api(kind: str) -> None:
    names, registry, _ = KINDS[kind]
    assert list(registry) == list(names)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_documented_policies_are_the_registered_ones(kind: str) -> None:
    _, registry, page = KINDS[kind]
    assert [row[0] for row in _rows(page)] == [f"`{name}`" for name in registry]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_documented_modules_exist_and_hold_the_registered_policy(kind: str) -> None:
    _, registry, page = KINDS[kind]
    for row, policy in zip(_rows(page), registry.values(), strict=True):
        (module,) = re.findall(r"`([\w/]+\.py)`", row[-1])
        assert (ROOT / module).is_file()
        implementation = policy if isinstance(policy, type) else type(policy)
        assert implementation.__module__ == "tandem." + module.removesuffix(".py").replace("/", ".")
