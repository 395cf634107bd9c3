"""The layout ARCHITECTURE.md promises, checked on the source: the library (imgidx.indexer, imgidx.search and the
API in imgidx/*.py) never imports a face (imgidx.cli, imgidx.service), the service never imports the CLI, and the
module-level import graph has no cycle. Imports under `if TYPE_CHECKING:` are annotations only and do not count."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (("imgidx.indexer", "indexer"), ("imgidx.search", "search"), ("imgidx", "imgidx"))
FACES = ("imgidx.cli", "imgidx.service")
ENTRY_POINTS = {"imgidx.__main__"}  # `python -m imgidx` is the CLI itself


def modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in PACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.with_suffix("").relative_to(ROOT / folder).parts
            name = ".".join((prefix, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text())
        typing_only = {
            id(x)
            for n in ast.walk(tree)
            if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test)
            for b in n.body
            for x in ast.walk(b)
        }
        deps = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in mods]
                candidates = subs or [target]
            elif isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            else:
                continue
            deps |= {c for c in candidates if c in mods and c != name}
        graph[name] = deps
    return graph


def test_the_library_never_imports_a_face_and_the_service_never_the_cli():
    graph = import_graph()
    assert len(graph) > 50  # the walk found the modules
    library = {m for m in graph if not m.startswith(FACES) and m not in ENTRY_POINTS}
    assert [(a, b) for a in library for b in graph[a] if b.startswith(FACES)] == []
    service = {m for m in graph if m.startswith("imgidx.service")}
    assert [(a, b) for a in service for b in graph[a] if b.startswith("imgidx.cli")] == []


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
