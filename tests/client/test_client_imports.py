"""The client package's own structure: its modules import each other without a circle (type-only
imports included), and none imports another module's underscore names."""

from __future__ import annotations

import ast
from pathlib import Path

import twoway.client

PACKAGE = Path(twoway.client.__file__).parent


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """Every ``(module, names)`` imported anywhere in ``path``, ``TYPE_CHECKING`` blocks and
    function bodies included."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {f"twoway.client.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {
        name: {module for module, _ in _imports(path) if module in modules and module != name}
        for name, path in modules.items()
    }


def test_no_import_circle_among_the_client_modules() -> None:
    graph = _graph()
    assert "twoway.client.link" in graph
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            circle = [*path[path.index(name) :], name]
            raise AssertionError("import circle: " + " -> ".join(circle))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_no_client_module_imports_an_underscore_name() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        for module, names in _imports(path):
            if module.startswith("twoway"):
                private = [n for n in names if n.startswith("_") and n != "__version__"]
                assert not private, f"{path.name} imports {private} from {module}"
