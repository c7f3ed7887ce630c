"""Layering: no import cycle between compressor's subpackages (and top-level modules).

Every `import compressor.X` / `from compressor.X import ...` counts, including the ones inside functions: a lazy
import still ties the two packages together, it only hides the knot until run time.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import compressor

ROOT = Path(compressor.__file__).resolve().parent


def unit(module: str) -> str:
    """`compressor.engine.trainer` -> `engine`; `compressor.recipe` -> `recipe`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def import_edges(root: Path = ROOT) -> dict[tuple[str, str], str]:
    """(importing unit, imported unit) -> one place that makes the edge ("file:line")."""
    edges: dict[tuple[str, str], str] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).with_suffix("")
        source = unit(".".join(rel.parts))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
                if node.module == "compressor":  # `from compressor import metrics`
                    targets = [f"compressor.{alias.name}" for alias in node.names]
            for name in targets:
                if name.split(".")[0] != "compressor" or name == "compressor":
                    continue
                target = unit(name)
                if target != source:
                    edges.setdefault((source, target), f"{path.relative_to(root.parent)}:{node.lineno}")
    return edges


def find_cycle(edges: dict[tuple[str, str], str]) -> list[str] | None:
    """One cycle as a list of units (first == last), or None."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, [])):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_import_cycle_between_subpackages() -> None:
    edges = import_edges()
    cycle = find_cycle(edges)
    if cycle is not None:
        steps = [f"{a} -> {b} ({edges[(a, b)]})" for a, b in itertools.pairwise(cycle)]
        raise AssertionError("import cycle: " + "; ".join(steps))


def test_cycle_finder_sees_a_cycle(tmp_path: Path) -> None:
    """The check itself: a two-package knot, one side through a function-level import, is found."""
    pkg = tmp_path / "compressor"
    (pkg / "a").mkdir(parents=True)
    (pkg / "b").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("from compressor.b import thing\n")
    (pkg / "b" / "__init__.py").write_text("def thing():\n    from compressor import a\n")
    (pkg / "c.py").write_text("import compressor.a\n")
    edges = import_edges(pkg)
    assert ("a", "b") in edges and ("b", "a") in edges and ("c", "a") in edges
    assert find_cycle(edges) in (["a", "b", "a"], ["b", "a", "b"])
    (pkg / "b" / "__init__.py").write_text("def thing():\n    return 1\n")
    assert find_cycle(import_edges(pkg)) is None


def test_engine_imports_no_method_module() -> None:
    """The engine reaches methods through the registry (`compressor.methods`) only, never a method's module."""
    edges = import_edges()
    offending = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("compressor.methods."):
                offending.append(f"{path.name}:{node.lineno} {node.module}")
    assert ("engine", "methods") in edges
    assert not offending, offending
