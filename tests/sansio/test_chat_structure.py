"""The chat package's shape: no import circle (type-only imports included), nothing above
sansio imported, no module's private names used by another, and small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import twoway.sansio.chat

PACKAGE = Path(twoway.sansio.chat.__file__).parent
NAME = "twoway.sansio.chat"


def _modules() -> dict[str, ast.Module]:
    return {
        (NAME if p.stem == "__init__" else f"{NAME}.{p.stem}"): ast.parse(p.read_text())
        for p in sorted(PACKAGE.glob("*.py"))
    }


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module, names) of every import, at any depth (``if TYPE_CHECKING:`` included)."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


def test_no_import_circle_inside_the_chat_package() -> None:
    modules = _modules()
    graph = {
        name: {m for m, _ in _imports(tree) if m in modules and m != name}
        for name, tree in modules.items()
    }
    # The package's __init__ only re-exports: nothing inside imports it back.
    assert not [name for name, deps in graph.items() if NAME in deps]
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " -> ".join([*path, name])
        if name in done:
            return
        for dep in graph[name]:
            visit(dep, (*path, name))
        done.add(name)

    for name in graph:
        visit(name, ())


def test_the_chat_imports_nothing_above_sansio_nor_private_names() -> None:
    for name, tree in _modules().items():
        for module, names in _imports(tree):
            if module.startswith("twoway"):
                assert module.startswith("twoway.sansio"), (name, module)
                if module != name:
                    assert not [n for n in names if n.startswith("_")], (name, module, names)


def test_no_chat_module_is_over_500_lines() -> None:
    for path in PACKAGE.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 500, path.name
