"""The export tool depends on the shared settings and the launcher only, never on the web layer,
so it can run (and be installed) without the gateway."""

from __future__ import annotations

import ast
from pathlib import Path

from common.settings import REPO_ROOT

ALLOWED = {"common", "devstack", "export"}


def _project_packages() -> set[str]:
    return {p.parent.name for p in REPO_ROOT.glob("*/__init__.py")}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_export_imports_only_common_and_devstack() -> None:
    project = _project_packages()
    assert {"common", "devstack", "export", "gateway"} <= project
    offending = {
        str(path.relative_to(REPO_ROOT)): sorted((_imported_roots(path) & project) - ALLOWED)
        for path in sorted((REPO_ROOT / "export").rglob("*.py"))
    }
    assert {name: roots for name, roots in offending.items() if roots} == {}
