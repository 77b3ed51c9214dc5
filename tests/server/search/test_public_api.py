"""The engine's public API: what the package exports, and that its values need no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from autohas_edge.server import search

ROOT = Path(__file__).resolve().parents[3]
#: code outside the engine that must use only `autohas_edge.server.search`'s exports
CLIENTS = ["bench", "export", "server"]


def test_every_exported_name_resolves() -> None:
    for name in search.__all__:
        assert getattr(search, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = search.nothing  # type: ignore[attr-defined]


def test_the_config_and_the_space_import_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from autohas_edge.server.search import SearchConfig, SearchSpace, STRATEGIES\n"
        "from autohas_edge.server.search.config import MODES\n"
        "from autohas_edge.server import engine\n"
        "engine.check_spec({'strategy': 'reinforce'})\n"
        "print(SearchConfig(steps=3).to_json()['steps'], STRATEGIES, MODES)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("3 ('differentiable', 'reinforce')")


def _engine_imports(path: Path) -> list[str]:
    """Modules under `autohas_edge.server.search` that `path` imports."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return [m for m in found if m.startswith("autohas_edge.server.search.")]


def test_clients_use_only_the_package_exports() -> None:
    offenders = {}
    for folder in CLIENTS:
        for path in (ROOT / folder).rglob("*.py"):
            if "search" in path.relative_to(ROOT).parts[:2]:
                continue  # the engine itself
            if bad := _engine_imports(path):
                offenders[str(path.relative_to(ROOT))] = bad
    assert offenders == {}


def test_an_export_is_never_shadowed_by_a_submodule_of_the_same_name() -> None:
    import importlib.util

    for name in search.__all__:
        assert importlib.util.find_spec(f"autohas_edge.server.search.{name}") is None, name
