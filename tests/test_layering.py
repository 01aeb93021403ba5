"""The package layering (docs/ARCHITECTURE.md): the worker imports nothing of the web layer, and no
imports go round in a circle, between modules or between packages.

Static checks read every `import` of the repository's packages with `ast` (imports inside
functions count too: a lazy import still ties the two modules together); the runtime check
imports the worker in a fresh interpreter and looks at what got loaded, third-party packages
included (a library that pulls in aiohttp would show there and nowhere else).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The aiohttp application: what a worker must never need to run a job.
WEB_LAYER = (
    "aiohttp",
    "gateway.app",
    "gateway.routes",
    "gateway.errors",
    "gateway.keys",
    "gateway.limits",
    "gateway.auth",
)


def _packages() -> list[str]:
    return sorted(p.parent.name for p in REPO.glob("*/__init__.py") if p.parent.name != "tests")


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in _packages():
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name an import statement of `name` may refer to (modules and their members)."""
    names: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    modules = _modules()
    return {
        name: {
            imported for imported in _imported_names(name, path) if imported in modules and imported != name
        }
        for name, path in modules.items()
    }


def _cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(start, iter(graph.get(start, ())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph.get(nxt, ()))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component: list[str] = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def _collapsed(graph: Mapping[str, set[str]], depth: int) -> dict[str, set[str]]:
    """The graph between units named by the first `depth` components (1: top-level packages)."""

    def unit(name: str) -> str:
        return ".".join(name.split(".")[:depth])

    units: dict[str, set[str]] = {}
    for source, targets in graph.items():
        units.setdefault(unit(source), set()).update(unit(t) for t in targets if unit(t) != unit(source))
    return units


def _is_web(name: str) -> bool:
    return any(name == banned or name.startswith(banned + ".") for banned in WEB_LAYER)


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules() -> None:
    assert _cycles(_import_graph()) == []


def test_no_import_cycles_between_packages_or_subpackages() -> None:
    graph = _import_graph()
    assert _cycles(_collapsed(graph, 1)) == []  # gateway, worker, common, export, ...
    assert _cycles(_collapsed(graph, 2)) == []  # gateway.video, gateway.images, gateway.jobs, ...


def test_worker_reaches_no_web_module_through_project_imports() -> None:
    graph = _import_graph()
    seen: set[str] = set()
    todo = [name for name in graph if name == "worker" or name.startswith("worker.")]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph[name])
    assert sorted(name for name in seen if _is_web(name)) == []


def test_worker_loads_no_web_module_at_runtime() -> None:
    probe = "import json, sys, worker.main; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "worker.main" in loaded and "gateway.jobs" in loaded  # the probe saw the real import
    assert sorted(name for name in loaded if _is_web(name)) == []
