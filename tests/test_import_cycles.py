"""No import cycles among hierloc's modules (module-level imports; imports inside functions are excluded).

The graph is built from the source with `ast`, without importing anything: an edge A -> B for every
module-level `import`/`from ... import` in A (relative or absolute, `from . import x` included) that names
a hierloc module B, plus the packages Python initialises on the way to B (importing `hierloc.a.b` runs
`hierloc/a/__init__.py` first) unless they already enclose A. Imports under `if TYPE_CHECKING:` never run and
are skipped. Run this file as a script to print the graph's cycles.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "hierloc"

# Cycles owned by other work in progress, to be emptied when it lands: each entry is the sorted set of the
# modules of one strongly connected component. Nothing else may be added here.
ALLOWED_CYCLES: list[frozenset[str]] = [
]


def module_names(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """{dotted module name: file} for every .py file of the package (packages by their __init__.py)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements run when the module is imported: not in functions, not under TYPE_CHECKING."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            elif isinstance(node, ast.If):
                if not _is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.ClassDef):  # a class body runs at import time
                visit(node.body)
            elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, (ast.With, ast.AsyncWith, ast.For, ast.AsyncFor, ast.While)):
                visit(node.body)
                visit(getattr(node, "orelse", []))

    visit(tree.body)
    return found


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, dict[str, int]]:
    """{module: {imported hierloc module: line of the first import}} of module-level imports."""
    modules = module_names(root)
    top = root.name
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        edges: dict[str, int] = {}

        def add(target: str, line: int) -> None:
            if target not in modules or target == name:
                return
            # Packages that enclose the importer are already being initialised: no edge to them.
            for parent in _parents(target) + [target]:
                if parent in modules and parent != name and not name.startswith(parent + "."):
                    edges.setdefault(parent, line)

        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == top or alias.name.startswith(top + "."):
                        add(alias.name, node.lineno)
                continue
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
                if not (target == top or target.startswith(top + ".")):
                    continue
            add(target, node.lineno)
            for alias in node.names:  # `from pkg import submodule`
                if f"{target}.{alias.name}" in modules:
                    add(f"{target}.{alias.name}", node.lineno)
        graph[name] = edges
    return graph


def strongly_connected_components(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); only components with a cycle (more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


def describe_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    """One concrete cycle through the component's first module, with the import lines: `a:12 -> b:3 -> a`."""
    members = set(component)
    start = component[0]
    # Breadth-first search for the shortest way back to `start` inside the component.
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    path.reverse()
                    hops = zip(path, path[1:] + [start])
                    return " -> ".join(f"{a}:{graph[a][b]}" for a, b in hops) + f" -> {start}"
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return " <-> ".join(component)


def test_no_import_cycles():
    graph = import_graph()
    cycles = [c for c in strongly_connected_components(graph) if frozenset(c) not in ALLOWED_CYCLES]
    assert not cycles, "import cycles (module-level imports):\n" + "\n".join(describe_cycle(graph, c) for c in cycles)


def test_the_graph_sees_relative_absolute_and_submodule_imports():
    graph = import_graph()
    assert "hierloc.datasets.ground_truth" in graph["hierloc.datasets.base"]  # from .ground_truth import ...
    assert "hierloc.utils.io" in graph["hierloc.index.native_format"]  # from hierloc.utils.io import ...
    assert "hierloc.cli.demo" in graph["hierloc.cli.main"]  # from . import (convert, demo, ...)
    assert "hierloc.localization.localizer" not in graph["hierloc.cli.localize"]  # function-local only


def test_a_cycle_through_a_package_init_is_found(tmp_path):
    """The shape of the old datasets <-> evaluation cycle: a package __init__ importing a module of the other."""
    root = tmp_path / "pkg"
    files = {
        "__init__.py": "",
        "data/__init__.py": "from .base import Base\n",
        "data/base.py": "from ..ev.truth import Truth\n",
        "ev/__init__.py": "from .truth import Truth\nfrom .pipeline import run\n",
        "ev/truth.py": "import numpy\n",
        "ev/pipeline.py": "from ..data.base import Base\n\n\ndef run():\n    from ..data import late  # ignored\n",
        "other.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .ev import pipeline\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    graph = import_graph(root)
    (component,) = strongly_connected_components(graph)
    assert component == ["pkg.data", "pkg.data.base", "pkg.ev", "pkg.ev.pipeline"]
    assert describe_cycle(graph, component) == (
        "pkg.data:1 -> pkg.data.base:1 -> pkg.ev:2 -> pkg.ev.pipeline:1 -> pkg.data")
    assert graph["pkg.other"] == {}


if __name__ == "__main__":
    found = import_graph()
    components = strongly_connected_components(found)
    for component in components:
        allowed = " (allowed)" if frozenset(component) in ALLOWED_CYCLES else ""
        print(f"{len(component)} modules{allowed}: {describe_cycle(found, component)}")
    print(f"{len(components)} cycle(s) among {len(found)} modules")
    sys.exit(1 if any(frozenset(c) not in ALLOWED_CYCLES for c in components) else 0)
