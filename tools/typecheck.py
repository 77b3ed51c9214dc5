"""`make lint`'s type check: mypy on the hand-written packages, under their installed import names.

The repository keeps `server/`, `export/`, `device_sdk/`, `proto/` and `common/` at the top level and
installs them as `autohas_edge.<name>` (a package-dir map mypy cannot follow), so this builds a tree of
symbolic links, `build/typecheck/autohas_edge/<name> -> <name>/`, and runs mypy on it with the
settings in pyproject.toml's `[tool.mypy]`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server", "export", "device_sdk", "proto", "common")
TREE = ROOT / "build" / "typecheck"


def link_tree() -> Path:
    """(Re)create the link tree; returns the `autohas_edge` folder inside it."""
    namespace = TREE / "autohas_edge"
    namespace.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        link = namespace / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(ROOT / name, target_is_directory=True)
    return namespace


def main() -> int:
    """Run mypy; its exit status."""
    from mypy import api

    namespace = link_tree()
    stdout, stderr, status = api.run(
        [str(namespace), "--config-file", str(ROOT / "pyproject.toml")]
    )
    sys.stdout.write(stdout.replace(str(namespace) + "/", ""))
    sys.stderr.write(stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
