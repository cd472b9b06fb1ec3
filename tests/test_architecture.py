"""The import structure (docs/architecture.md): no circles between modules, and no module imports
from a later stage of the pipeline or from the wiring above it. Function-local imports count too:
an import moved into a function to dodge a circle is still a circle."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "debias"

# Lower layers never import higher ones. Within a layer any order is allowed, as long as there is
# no circle. The stages follow the pipeline: stream -> rewrite -> model -> train -> evaluate -> report.
LAYERS = [
    ("debias", "debias.errors", "debias.io", "debias.tokenizer", "debias.cache"),  # shared plumbing
    ("debias.stream",),
    ("debias.rewrite",),
    ("debias.model",),
    ("debias.train",),
    ("debias.config",),  # the settings of every group (EvalConfig is read by evaluate)
    ("debias.evaluate",),
    ("debias.report",),
    ("debias.demo",),  # builds a miniature Pythia with the stages below it
    ("debias.stages",),
    ("debias.app",),
]
ENTRY_POINTS = len(LAYERS)  # `python -m debias.<package>` modules wire their package to a command line


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every debias module this file imports, at any depth of the file (resolving relative imports)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


@functools.cache
def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def layer_of(module: str) -> int:
    if module.endswith(".__main__"):
        return ENTRY_POINTS
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or (p != "debias" and module.startswith(p + ".")) for p in prefixes):
            return rank
    raise AssertionError(f"{module}: not in any layer of tests/test_architecture.py; place it there")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def package_edges(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's __init__ re-exports its modules; importing the package then means importing them."""
    return {m: {t for t in targets if not m.startswith(t + ".")} for m, targets in edges.items()}


def test_every_module_has_a_layer():
    for module in graph():
        layer_of(module)


def test_no_import_circles():
    assert cycles(package_edges(graph())) == []


@pytest.mark.parametrize("module", sorted(graph()))
def test_no_import_from_a_later_stage(module):
    upward = sorted(t for t in graph()[module] if layer_of(t) > layer_of(module))
    assert not upward, f"{module} imports {upward} from a later layer (see LAYERS)"
