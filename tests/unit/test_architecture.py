"""The layout's rules, checked on the source: no import cycle, production never imports the dev tools, the
functional core imports no framework. Every import counts, including those inside functions."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("contracts", "domain", "streams", "warehouse", "dags", "dashboards")
CHECKED = (*PRODUCTION, "infra", "devtools")
# What the functional core may import besides the standard library and itself.
DOMAIN_ALLOWED = {"domain"}


def module_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in CHECKED:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imported_names(name: str, path: Path) -> set[str]:
    """Absolute dotted names this module imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges: set[str] = set()
        for target in imported_names(name, path):
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checks_see_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_outside_tests() -> None:
    assert cycles(import_graph(module_files())) == []


@pytest.mark.parametrize("package", PRODUCTION)
def test_production_never_imports_the_dev_tools(package: str) -> None:
    files = module_files()
    offenders = {
        name: sorted(t for t in imported_names(name, path) if t == "devtools" or t.startswith("devtools."))
        for name, path in files.items()
        if name == package or name.startswith(package + ".")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


SEEDED_DATA = "devtools.recon_data"  # the seeded reconciliation data: tests, benchmarks and the demo only


def test_production_never_imports_the_seeded_reconciliation_data() -> None:
    files = module_files()
    assert SEEDED_DATA in imported_names("devtools.recon_demo", files["devtools.recon_demo"])  # the check sees it
    importers = {
        name
        for name, path in files.items()
        if name.split(".")[0] in PRODUCTION
        and any(target == SEEDED_DATA or target.startswith(SEEDED_DATA + ".") for target in imported_names(name, path))
    }
    assert importers == set()
    assert "warehouse.generator" not in files  # it lives in devtools/ only


def test_the_functional_core_imports_only_the_standard_library() -> None:
    files = module_files()
    foreign = {}
    for name, path in files.items():
        if not name.startswith("domain"):
            continue
        tops = {target.split(".")[0] for target in imported_names(name, path) if target}
        outside = {top for top in tops if top not in sys.stdlib_module_names and top not in DOMAIN_ALLOWED}
        outside.discard("__future__")
        if outside:
            foreign[name] = sorted(outside)
    assert foreign == {}
