"""docs/security.md names the test behind each claim of the threat model: each one must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECURITY = (REPO / "docs" / "security.md").read_text()


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_every_test_the_threat_model_cites_exists_where_it_says() -> None:
    every = {name for path in (REPO / "tests").rglob("test_*.py") for name in _tests_in(path)}
    cited = re.findall(r"`(?:(tests/[\w/.-]+\.py)(?:::(test_\w+))?|(test_\w+))`", SECURITY)
    assert len(cited) >= 10
    for path, in_file, bare in cited:
        if path:
            assert (REPO / path).is_file(), path
            if in_file:
                assert in_file in _tests_in(REPO / path), f"{path}::{in_file}"
        else:
            assert bare in every, bare


def test_the_threat_model_covers_each_compromise_the_issue_names() -> None:
    for part in ("**The fleet key.**", "**The SSH key secret.**", "**A Lambda role", "**A queue",
                 "**An inventory file"):
        assert part in SECURITY, part
    for heading in ("## The restricted fleet key", "## Rotating the fleet key"):
        assert heading in SECURITY, heading
