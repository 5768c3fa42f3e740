"""The shape of the package: no import cycles, layers that import only what is below them,
no function-local imports of trilemma modules, and modules and functions of readable size.

The import graph is read from the source (``ast``), module-level and function-level imports
alike, so a cycle hidden inside a function is found too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "trilemma"

# layer rules: a module under the key may import, of trilemma, only these (prefixes)
ALLOWED = {
    "trilemma.errors": (),
    "trilemma.processes": ("trilemma.processes",),
    "trilemma.samplers": ("trilemma.samplers", "trilemma.processes"),
    "trilemma.objectives": ("trilemma.objectives", "trilemma.processes"),
    "trilemma.nets": ("trilemma.nets",),
    "trilemma.train": ("trilemma.train",),
}
# what a method (trilemma.methods) must never import
NOT_FROM_METHODS = ("trilemma.config", "trilemma.build", "trilemma.setup", "trilemma.cli",
                    "trilemma.evaluate", "trilemma.training")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
# documented exceptions: (qualified name, why)
LONG_FUNCTIONS: dict[str, str] = {}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The trilemma modules an import statement loads (submodules where they exist)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "trilemma"]
    if node.level:
        pkg = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = pkg[: len(pkg) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if target.split(".")[0] != "trilemma":
        return []
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        out.append(sub if sub in MODULES else target)
    return out


def _imports() -> dict[str, list[tuple[str, bool, int]]]:
    """module -> [(imported module, inside a function?, line)]."""
    graph: dict[str, list[tuple[str, bool, int]]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        edges: list[tuple[str, bool, int]] = []

        def visit(node: ast.AST, local: bool) -> None:
            for child in ast.iter_child_nodes(node):
                inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    edges.extend((m, local, child.lineno)  # noqa: B023
                                 for m in _resolve(name, path, child))  # noqa: B023
                visit(child, inner)

        visit(tree, False)
        graph[name] = [e for e in edges if e[0] in MODULES and e[0] != name]
    return graph


GRAPH = _imports()


def _type_checking_lines(path: Path) -> set[int]:
    """Lines inside ``if TYPE_CHECKING:`` blocks (imports for annotations only)."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _runtime_graph() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for name, edges in GRAPH.items():
        skip = _type_checking_lines(MODULES[name])
        out[name] = {m for m, _, line in edges if line not in skip}
    return out


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = dfs(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = dfs(node)
            if found:
                return found
    return None


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    graph = _runtime_graph()
    # a package's __init__ re-exporting its submodules is not a cycle with them
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    assert _find_cycle(graph) is None


def test_no_function_local_imports_of_trilemma():
    local = [f"{name}:{line} imports {m}" for name, edges in GRAPH.items()
             for m, inside, line in edges if inside]
    assert local == []


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_only_what_is_below_them(layer):
    bad = [f"{name} imports {m}" for name, edges in GRAPH.items()
           if name == layer or name.startswith(layer + ".")
           for m, _, _ in edges
           if m != "trilemma" and not any(m == a or m.startswith(a + ".")
                                          for a in ALLOWED[layer])]
    assert bad == []


def test_methods_import_neither_config_nor_builders():
    bad = [f"{name} imports {m}" for name, edges in GRAPH.items()
           if name.startswith("trilemma.methods")
           for m, _, _ in edges if any(m == x or m.startswith(x + ".")
                                       for x in NOT_FROM_METHODS)]
    assert bad == []


def test_modules_are_of_readable_size():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_functions_are_of_readable_size():
    long = {}
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                qual = f"{name}.{node.name}"
                if n > MAX_FUNCTION_LINES and qual not in LONG_FUNCTIONS:
                    long[qual] = n
    assert long == {}
