"""The import graph of the three packages: no cycles, and the layers point inward.

Every ``import`` statement counts, at module level or inside a function (a lazy import is
still a dependency; it only moves the failure to run time). Imports under
``if TYPE_CHECKING:`` count too: annotations are part of what a reader must understand.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import genagent_thespian.backends
import genagent_thespian.patterns
import pytest

import genagent_thespian

PACKAGES = {
    "genagent_thespian": Path(genagent_thespian.__file__).parent,
    "genagent_thespian.backends": Path(genagent_thespian.backends.__file__).parent,
    "genagent_thespian.patterns": Path(genagent_thespian.patterns.__file__).parent,
}


def _modules() -> dict[str, Path]:
    """Installed module name -> file, for every module of the three packages."""
    found: dict[str, Path] = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join([package, *parts])
            if name.startswith("genagent_thespian.backends.") and package == "genagent_thespian":
                continue  # pragma: no cover - backends/ is not under genagent_thespian/
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """The modules of our packages that ``name`` imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from pkg import sub`` imports the module pkg.sub when there is one.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for imported in targets:
            module = imported
            while module and module not in MODULES:
                module = module.rpartition(".")[0]  # pkg.mod.attr -> pkg.mod
            if module and module != name:
                yield module


GRAPH = {name: sorted(set(_imports(name, path))) for name, path in MODULES.items()}


def _find_cycle() -> list[str] | None:
    """One import cycle as a list of modules (first == last), or ``None``."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in GRAPH[module]:
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(GRAPH):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def test_the_graph_sees_every_module_and_lazy_imports() -> None:
    assert "genagent_thespian._core.machine" in GRAPH
    assert "genagent_thespian.backends.claude" in GRAPH
    assert "genagent_thespian.patterns.pipeline" in GRAPH
    # A function-level import is an edge: the CLI imports the console lazily.
    assert "genagent_thespian.cli._console" in GRAPH["genagent_thespian.cli"]


def test_no_import_cycles() -> None:
    cycle = _find_cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


#: Layers of ``genagent_thespian`` and the layers each may import (besides itself).
ALLOWED = {
    "_core": {"messages"},
    "messages": {"_core"},
    "_os": {"_core"},
    "_durable": {"_core", "_os", "messages"},
    "_actors": {"_core", "_os", "_durable", "messages"},
    "_api": {"_core", "_os", "_durable", "_actors", "messages"},
    "otel": {"_core", "_actors", "_api"},
    "_nodes": {"_core", "_os", "_durable", "_actors", "_api", "messages"},
}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_inward(layer: str) -> None:
    wrong = [
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module.startswith("genagent_thespian.") and _layer(module) == layer
        for target in targets
        if _layer(target) != layer and _layer(target) not in ALLOWED[layer]
    ]
    assert wrong == []


def _outside(package: str) -> list[str]:
    return [
        target
        for module, targets in GRAPH.items()
        if module.startswith(package)
        for target in targets
        if not target.startswith(package)
    ]


def test_backends_use_only_the_seam_and_the_public_api() -> None:
    allowed = ("genagent_thespian._core.", "genagent_thespian.messages")
    wrong = [
        t
        for t in _outside("genagent_thespian.backends")
        if t != "genagent_thespian" and not t.startswith(allowed)
    ]
    assert wrong == []


def test_patterns_use_only_the_public_api() -> None:
    public = {"genagent_thespian", "genagent_thespian.messages", "genagent_thespian.testing"}
    assert set(_outside("genagent_thespian.patterns")) <= public


def test_the_typecheck_tree_mirrors_the_installed_layout() -> None:
    """``.typecheck/`` (pyproject's mypy_path) must link every top-level entry of the package."""
    root = Path(genagent_thespian.__file__).parent
    tree = root.parent / ".typecheck" / "genagent_thespian"
    expected = {p.name for p in root.iterdir() if p.name != "__pycache__"} | {
        "backends",
        "patterns",
    }
    assert {p.name for p in tree.iterdir()} == expected
    for link in tree.iterdir():
        assert link.is_symlink()
    assert (tree / "backends").resolve() == PACKAGES["genagent_thespian.backends"].resolve()
    assert (tree / "patterns").resolve() == PACKAGES["genagent_thespian.patterns"].resolve()
