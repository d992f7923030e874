"""docs/reference.md is what docs/reference.py generates from the API models now."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from paths import REPO

DOCS = REPO / "docs"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", DOCS / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_is_generated_from_the_current_models() -> None:
    expected = generator().render_reference()
    assert (DOCS / "reference.md").read_text() == expected, (
        "docs/reference.md is stale: .venv/bin/python docs/reference.py > docs/reference.md"
    )


def test_reference_documents_every_spec_field() -> None:
    from tandem.api import InferencePoolSpec

    text = (DOCS / "reference.md").read_text()
    for field in InferencePoolSpec.model_fields.values():
        assert f"| `{field.alias}` |" in text
    assert "| `promptTokensThreshold` | integer or `auto` |" in text


def test_reference_lists_every_managed_flag_and_variable_from_the_builders_tables() -> None:
    from tandem.operator.build.engine import MANAGED_ENV, MANAGED_ENV_PREFIXES, MANAGED_FLAGS

    text = (DOCS / "reference.md").read_text()
    for setting in (*MANAGED_FLAGS, *MANAGED_ENV):
        for name in (setting.name, *setting.aliases):
            assert f"`{name}`" in text, name
    assert MANAGED_ENV_PREFIXES
    for prefix in MANAGED_ENV_PREFIXES:
        assert f"`{prefix.name}*`" in text
