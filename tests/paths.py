"""Where the tests find the repository's files, wherever in tests/ the test module lives."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
