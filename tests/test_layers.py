"""The package's shape: no import circle, no import up the layers, no reach into privates.

Walks every module of ``src/twoway`` with ``ast`` (type-only imports count too) and checks
the rules of docs/architecture.md: contracts go down, implementations go up.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "twoway"

#: What each layer may import of twoway (besides itself). The first matching prefix wins.
ALLOWED: list[tuple[str, set[str]]] = [
    ("twoway._version", set()),
    ("twoway.errors", set()),
    ("twoway.sansio", {"twoway.errors"}),
    ("twoway.config", {"twoway.errors"}),
    ("twoway.net", {"twoway.errors", "twoway.sansio"}),
    ("twoway.bus", {"twoway.errors", "twoway.sansio"}),
    ("twoway.tls", {"twoway.errors"}),
    ("twoway.web", set()),
    ("twoway.store", {"twoway.errors", "twoway.sansio"}),
    ("twoway.logs", {"twoway.errors"}),
    ("twoway.loops", {"twoway.errors"}),
    ("twoway.testing", {"twoway.errors", "twoway.net", "twoway.sansio"}),
    (
        "twoway.services",
        {
            "twoway.errors",
            "twoway.sansio",
            "twoway.net",
            "twoway.bus",
            "twoway.config",
            "twoway.store",
        },
    ),
    (
        "twoway.metrics",
        {
            "twoway.errors",
            "twoway.sansio",
            "twoway.net",
            "twoway.bus",
            "twoway.config",
            "twoway.store",
            "twoway.services",
        },
    ),
    ("twoway.client", {"twoway.errors", "twoway.sansio", "twoway.net", "twoway.loops"}),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, int]]:
    """The twoway modules ``name`` imports (every import statement, type-only ones too)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("twoway")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if not mod.startswith("twoway"):
                continue
            for alias in node.names:  # `from pkg import submodule` imports the submodule
                sub = f"{mod}.{alias.name}"
                found.append((sub if sub in MODULES else mod, node.lineno))
    return found


def _layer(name: str) -> tuple[str, set[str]] | None:
    for prefix, allowed in ALLOWED:
        if name == prefix or name.startswith(prefix + "."):
            return prefix, allowed
    return None


def test_no_import_runs_up_the_layers() -> None:
    bad = []
    for name, path in MODULES.items():
        layer = _layer(name)
        if layer is None:
            continue  # the process layer (cli, runner, workers, twoway itself) may use all
        prefix, allowed = layer
        for target, line in _imports(name, path):
            ok = target == prefix or target.startswith(prefix + ".")
            ok = ok or any(target == a or target.startswith(a + ".") for a in allowed)
            if not ok:
                bad.append(f"{path.relative_to(SRC)}:{line}: {name} imports {target}")
    assert not bad, "imports up the layers:\n" + "\n".join(bad)


def test_no_import_circle() -> None:
    graph = {
        name: {t for t, _ in _imports(name, path) if t in MODULES} for name, path in MODULES.items()
    }
    # A package's __init__ importing its own children is how a package exports: not a circle
    # unless a child imports the package back, which the walk below then finds.
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, "import circles:\n" + "\n".join(circles)


#: Underscore names that are public API of the standard library.
STDLIB_PUBLIC = {"_replace", "_asdict", "_fields", "_make", "_exit", "_current_frames"}


def _own_names(tree: ast.Module) -> set[str]:
    """The underscore names a module defines itself: functions, classes, attributes it
    assigns (``self._x = ...``), class-level names and ``__slots__`` entries."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("_")
            and node.value.isidentifier()
        ):
            names.add(node.value)  # a __slots__ entry
    return names


def test_no_module_reaches_into_another_s_private_names() -> None:
    bad = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text())
        own = _own_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("twoway"):
                bad += [
                    f"{path.relative_to(SRC)}:{node.lineno}: imports {alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
            elif (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and node.attr not in own
                and node.attr not in STDLIB_PUBLIC
            ):
                bad.append(f"{path.relative_to(SRC)}:{node.lineno}: .{node.attr}")
    assert not bad, "reaches into private names:\n" + "\n".join(sorted(bad))
