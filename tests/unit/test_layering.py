"""The import rule of docs/decisions/0005-layering.md, read from that file's table, checked on every import
of the package: the layers each module may import, the domain's purity, no cycle, no test tier."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "layers" / "relayguard" / "relayguard"
ADR = REPO / "docs" / "decisions" / "0005-layering.md"
EXCEPTIONS = {("relayguard.cli", "relayguard.adapters.ssh_keys")}
IMPURE = ("boto3", "botocore", "paramiko", "aws_lambda_powertools", "socket", "subprocess", "requests",
          "urllib.request", "http")
TEST_TIERS = ("lab", "harness", "tests", "bench", "demo")


def layer_table() -> dict[str, tuple[int, frozenset[int]]]:
    """Module prefix -> (its layer, the layers it may import), from the ADR's table."""
    table: dict[str, tuple[int, frozenset[int]]] = {}
    for line in ADR.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].isdigit():
            continue
        allowed = frozenset(int(n) for n in re.findall(r"\d+", cells[3]))
        for prefix in re.findall(r"`(relayguard(?:\.\w+)*)`", cells[2]):
            table[prefix] = (int(cells[0]), allowed)
    return table


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> Iterator[str]:
    """Every module the file imports, anywhere in it; ``from relayguard import x`` names ``relayguard.x``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if (PACKAGE.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or \
                        (PACKAGE.parent / candidate.replace(".", "/") / "__init__.py").exists():
                    yield candidate


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def graph() -> dict[str, set[str]]:
    return {name: {imp for imp in imports(path) if imp in MODULES and imp != name} for name, path in MODULES.items()}


def layer_of(name: str, table: dict[str, tuple[int, frozenset[int]]]) -> tuple[str, int, frozenset[int]] | None:
    matches = [prefix for prefix in table if name == prefix or name.startswith(prefix + ".")]
    if not matches:
        return None
    prefix = max(matches, key=len)
    return (prefix, *table[prefix])


def test_the_table_is_read_and_covers_every_module_of_the_package():
    table = layer_table()
    assert len({layer for layer, _ in table.values()}) == 8
    unplaced = [name for name in MODULES if name != "relayguard" and layer_of(name, table) is None]
    assert unplaced == []


def test_every_import_goes_to_a_layer_the_table_allows():
    table = layer_table()
    wrong = []
    for name, targets in graph().items():
        here = layer_of(name, table)
        if here is None:  # the package's own __init__: a version string, no imports of the package
            assert not targets, name
            continue
        _, layer, allowed = here
        for target in targets:
            there = layer_of(target, table)
            if there is None or (name, target) in EXCEPTIONS:
                continue
            _, target_layer, _ = there
            if target_layer not in allowed:
                wrong.append(f"{name} (layer {layer}) imports {target} (layer {target_layer})")
    assert wrong == []


def test_the_domain_imports_no_io_library():
    impure = [f"{name} imports {imp}" for name, path in MODULES.items() if name.startswith("relayguard.domain")
              for imp in imports(path) if imp.split(".")[0] in IMPURE or imp in IMPURE]
    assert impure == []


def test_the_product_imports_no_test_tier():
    found = [f"{name} imports {imp}" for name, path in MODULES.items()
             for imp in imports(path) if imp.split(".")[0] in TEST_TIERS]
    assert found == []


def test_there_is_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


@pytest.mark.parametrize(("importer", "imported"), [
    ("relayguard.services", "relayguard.adapters.ssh"),
    ("relayguard.domain.verdict", "relayguard.engine"),
    ("relayguard.entrypoints.worker", "relayguard.adapters.dynamo"),
    ("relayguard.adapters.dynamo", "relayguard.services"),
])
def test_the_rule_refuses_the_arrows_it_exists_to_refuse(importer, imported):
    table = layer_table()
    _, _, allowed = layer_of(importer, table) or ("", 0, frozenset())
    _, imported_layer, _ = layer_of(imported, table) or ("", 0, frozenset())
    assert imported_layer not in allowed
