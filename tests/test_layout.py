"""The layout in ARCHITECTURE.md, checked: imports point down the data flow, no package reaches
into another's private names, no import circle, no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastcore_cv"
# The data flow, bottom first; a module may import from its own layer or the layers above it
# in this list (lower index), never from a later one.
LAYERS = [
    {"checks", "output_files", "progress", "threads", "_lazy", "display"},
    {"kernels"},
    {"flat_grad"},
    {"nn"},
    {"optim"},
    {"backend"},
    {"learner"},
    {"vision"},
    {"export"},
    {"distributed"},
    {"serve"},
    {"clean"},
    {"perf"},
    {"tour", "demo", "lesson_pictures"},
    {"cli", "__main__"},
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}
# The one upward import, lazy inside the method: ``learn.export_onnx(path)`` is the name fastai
# users reach for; ``import fastcore_cv.learner`` never loads the export package.
ALLOWED_UPWARD = {("fastcore_cv.learner.core", "fastcore_cv.export.onnx_export")}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, *, module_level_only: bool) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for each fastcore_cv import in ``path``.
    ``module_level_only`` skips imports inside functions and ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    nodes = list(_walk_module_level(tree)) if module_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("fastcore_cv"):
                found.append((node.module, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [
                (a.name, [], node.lineno) for a in node.names if a.name.startswith("fastcore_cv")
            ]
    return found


def _walk_module_level(node: ast.AST):
    """The nodes run when the module is imported: not inside functions or TYPE_CHECKING."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            yield from (n for orelse in child.orelse for n in [orelse, *_walk_module_level(orelse)])
            continue
        yield child
        yield from _walk_module_level(child)


def _part(module: str) -> str | None:
    """The top-level part of the package a module belongs to (None for the package itself)."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else None


def test_every_part_of_the_package_has_a_place_in_the_flow():
    parts = {_part(m) for m in _modules()} - {None}
    assert parts <= set(RANK), f"add to LAYERS (and ARCHITECTURE.md): {sorted(parts - set(RANK))}"


def test_imports_point_down_the_data_flow():
    wrong = []
    for module, path in _modules().items():
        here = _part(module)
        for target, names, line in _imports(path, module_level_only=False):
            # ``from fastcore_cv import x`` names a part (x) or a package-level name
            there = (
                _part(f"fastcore_cv.{names[0]}")
                if target == "fastcore_cv" and names
                else _part(target)
            )
            if here is None or there not in RANK:
                continue
            if RANK[there] > RANK[here] and (module, target) not in ALLOWED_UPWARD:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} {module} -> {target}")
    assert not wrong, "imports pointing up the data flow:\n" + "\n".join(wrong)


def test_no_package_imports_another_packages_private_names():
    wrong = []
    for module, path in _modules().items():
        for target, names, line in _imports(path, module_level_only=False):
            if _part(target) == _part(module):
                continue
            private = [n for n in names if n.startswith("_")]
            private += [s for s in target.split(".")[2:] if s.startswith("_")]
            if private:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} {target} {private}")
    assert not wrong, "cross-package private imports:\n" + "\n".join(wrong)


def test_no_import_circle_at_module_level():
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for target, names, _ in _imports(path, module_level_only=True):
            for candidate in [f"{target}.{n}" for n in names] + [target]:
                if candidate in modules and candidate != module:
                    edges.add(candidate)
                    break
        graph[module] = edges
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_module_over_the_size_of_one_idea():
    sizes = {m: len(p.read_text().splitlines()) for m, p in _modules().items()}
    big = {m: n for m, n in sizes.items() if n > MAX_LINES}
    assert not big, f"split these (over {MAX_LINES} lines): {big}"
