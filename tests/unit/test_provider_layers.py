"""Providers stay in their layer: every module under reconciler/providers imports
only core, state, load, net and providers (function-level imports included),
except the one marked adapter, docker/legacy.py, which reaches the engine until
the executor passes AgentExtras itself."""

from __future__ import annotations

import ast
from pathlib import Path

import reconciler.providers

ALLOWED = ("reconciler.core", "reconciler.state", "reconciler.load", "reconciler.net", "reconciler.providers")
ADAPTER = {"docker/legacy.py": ("reconciler.engine.agentsetup",)}


def imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return {m for m in out if m == "reconciler" or m.startswith("reconciler.")}


def test_providers_import_only_lower_layers():
    root = Path(reconciler.providers.__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        allowed = ALLOWED + ADAPTER.get(rel, ())
        bad += [f"{rel}: {m}" for m in sorted(imports(path)) if not m.startswith(allowed)]
    assert bad == []
    assert imports(root / "docker" / "legacy.py") == {"reconciler.core.model", "reconciler.providers.base",
                                                      "reconciler.engine.agentsetup"}
