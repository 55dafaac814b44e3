"""The import graph of src/lorakit and benchmarks/ has no cycle; nothing edits sys.path; benchmarks never import tests.

The graph is built from the source with ``ast`` (nothing is imported): one node per module, one edge
per ``import`` / ``from ... import`` naming another module of the tree — absolute or relative, at the
top of a file or inside a function (a function-level import is a cycle that is only deferred).
``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"lorakit": REPO / "src", "benchmarks": REPO}  # top-level package -> the folder that holds it

def module_name(path: Path, root: Path) -> str:
    """``src/lorakit/core/spec.py`` -> ``lorakit.core.spec``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the two trees, by name."""
    found = {}
    for package, root in ROOTS.items():
        for path in sorted((root / package).rglob("*.py")):
            found[module_name(path, root)] = path
    return found


def imported_names(path: Path, name: str) -> list[tuple[str, str | None]]:
    """(module, imported attribute or None) for every import statement of the file, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: strip level-1 trailing parts of the current package
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out += [(target, alias.name) for alias in node.names]
    return out


def import_graph() -> nx.DiGraph:
    """The module graph of the two trees (edges only between their own modules)."""
    mods = modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(mods)
    for name, path in mods.items():
        for target, attr in imported_names(path, name):
            if attr is not None and f"{target}.{attr}" in mods:
                dest = f"{target}.{attr}"
            else:  # the deepest module of the dotted name (import a.b.c where only a.b is ours: a.b)
                parts = target.split(".")
                dest = next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in mods),
                            None)
            if dest is not None and dest != name:
                graph.add_edge(name, dest)
    return graph


def cycle_message(graph: nx.DiGraph) -> str | None:
    """A readable cycle path (a -> b -> a) if the graph has one, else None."""
    try:
        edges = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return None
    return " -> ".join([edges[0][0], *(v for _, v in edges)])


def test_the_graph_sees_relative_and_function_level_imports(tmp_path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("def f():\n    from . import b\n    from pkg.b import g\n")
    found = imported_names(pkg / "a.py", "pkg.a")
    assert ("pkg", "b") in found and ("pkg.b", "g") in found
    assert imported_names(pkg / "__init__.py", "pkg") == [("pkg.a", "f")]


def test_a_cycle_is_reported_with_its_path() -> None:
    graph = nx.DiGraph([("x", "y"), ("y", "z"), ("z", "x")])
    assert cycle_message(graph) in ("x -> y -> z -> x", "y -> z -> x -> y", "z -> x -> y -> z")
    assert cycle_message(nx.DiGraph([("x", "y")])) is None


def test_src_and_benchmarks_have_no_import_cycle() -> None:
    graph = import_graph()
    assert {n.split(".")[0] for n in graph} == set(ROOTS) and len(graph) > 100  # the walk found both trees
    assert graph.has_edge("benchmarks.train_scaling", "benchmarks.train_speed")  # and their imports
    assert cycle_message(graph) is None, f"import cycle: {cycle_message(graph)}"


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_no_file_edits_sys_path(package: str) -> None:
    """sys.path edits hide a broken layout; run scripts as ``python -m benchmarks.X`` instead."""
    offenders = []
    for path in sorted((ROOTS[package] / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            target = node.func.value if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else (
                node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
            if isinstance(target, ast.Attribute) and target.attr == "path" and \
                    isinstance(target.value, ast.Name) and target.value.id == "sys":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_benchmarks_never_import_tests() -> None:
    """Tests may import benchmarks (tiny models, reliability kits), never the reverse."""
    offenders = []
    for name, path in modules().items():
        if name.split(".")[0] == "benchmarks":
            offenders += [f"{name}: {target}" for target, _ in imported_names(path, name)
                          if target == "tests" or target.startswith(("tests.", "conftest")) or target == "tiny_models"]
    assert not offenders, offenders
