"""The package's import graph: no cycles, and dependencies point one way (DESIGN.md).

Every import counts, also the ones inside functions (a lazy import still makes the two modules
depend on each other; it only hides the cycle from Python's import machinery).
"""

from __future__ import annotations

import ast
from pathlib import Path

import trainwell

ROOT = Path(trainwell.__file__).parent


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the trainwell modules it imports (``from pkg import sub`` counts as pkg.sub)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# package -> packages it must never import (DESIGN.md: cli -> api -> paradigms -> engine -> the rest)
FORBIDDEN = {
    "trainwell.engine": ("trainwell.paradigms", "trainwell.api", "trainwell.cli", "trainwell.inference",
                         "trainwell.federated"),
    "trainwell.distributed": ("trainwell.engine", "trainwell.paradigms", "trainwell.api", "trainwell.cli"),
    "trainwell.models": ("trainwell.engine", "trainwell.paradigms", "trainwell.objectives", "trainwell.cli"),
    "trainwell.objectives": ("trainwell.engine", "trainwell.paradigms", "trainwell.cli", "trainwell.api"),
    "trainwell.checkpoint": ("trainwell.engine", "trainwell.paradigms", "trainwell.distributed"),
    "trainwell.data": ("trainwell.engine", "trainwell.paradigms", "trainwell.models"),
    "trainwell.config": ("trainwell.engine", "trainwell.paradigms", "trainwell.models"),
    "trainwell.paradigms": ("trainwell.api", "trainwell.cli", "trainwell.inference", "trainwell.federated"),
    "trainwell.export": ("trainwell.api", "trainwell.cli"),  # goes through inference.load_for_inference
    # federated/ drives Trainers (engine) on paradigms' Jobs; only the api and cli sit above it
    "trainwell.federated": ("trainwell.api", "trainwell.cli"),
}


def test_dependencies_point_one_way():
    bad = []
    for module, imports in import_graph().items():
        for package, banned in FORBIDDEN.items():
            if module == package or module.startswith(package + "."):
                bad += [f"{module} imports {t}" for t in imports
                        if any(t == b or t.startswith(b + ".") for b in banned)]
    assert bad == []
