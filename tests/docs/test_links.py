"""Relative links in the docs and the image READMEs lead to files (and headings) that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from paths import REPO

ROOT = REPO
PAGES = sorted([*(ROOT / "docs").glob("*.md"), *(ROOT / "images").glob("*/README.md")])
_LINK = re.compile(r"\]\(([^)\s]+)\)")
# Fenced blocks and inline code spans: brackets there are not links.
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+ (.+)$", _CODE.sub("", page.read_text()), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in _LINK.findall(_CODE.sub("", page.read_text())):
        if re.match(r"^[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists() or (
            anchor and destination.suffix == ".md" and anchor not in anchors(destination)
        ):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    assert broken_links(page) == []


def test_checker_sees_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [gone](missing.md) [bad anchor](#nowhere) `[code](x.md)`\n")
    assert broken_links(page) == ["missing.md", "#nowhere"]
