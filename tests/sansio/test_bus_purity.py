"""The bus protocol is sans-I/O: its modules import no event loop, socket, clock, thread or
Redis client, and nothing of twoway but the errors and other sans-I/O modules (the bus
drives the protocol, never the other way round)."""

from __future__ import annotations

import ast
from pathlib import Path

import twoway.sansio.bus

PACKAGE = Path(twoway.sansio.bus.__file__).parent
ALLOWED_STDLIB = {
    "__future__",
    "collections",
    "collections.abc",
    "dataclasses",
    "json",
    "math",
    "typing",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: relative import"
            names.add(node.module or "")
    return names


def test_the_bus_protocol_imports_nothing_with_io() -> None:
    modules = sorted(PACKAGE.glob("*.py"))
    assert {p.stem for p in modules} >= {"codec", "events", "inbox", "items", "outbox"}
    for path in modules:
        for name in _imports(path):
            twoway_ok = name == "twoway.errors" or name.startswith("twoway.sansio.")
            assert twoway_ok or name in ALLOWED_STDLIB, f"{path.name} imports {name}"
