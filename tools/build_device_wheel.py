"""Build the device-only distribution `autohas-edge-device` (`make device-wheel`).

The repository keeps one `pyproject.toml` (the full `autohas-edge`, with the server and the
exporter). A device needs only three of its packages: `autohas_edge.device_sdk`, the generated gRPC
code `autohas_edge.proto` and the numpy-only `autohas_edge.common`. This script stages exactly those
folders in a temporary directory, laid out as installed (`autohas_edge/<package>/...`, with no
`autohas_edge/__init__.py`: a namespace package), writes a generated `pyproject.toml` there (the
version, Python requirement and licence read from the root one) and builds a pure-Python wheel with
`pip wheel --no-deps`::

    python -m tools.build_device_wheel --out dist/

Its dependencies are the root project's base dependencies plus its `device` extra (numpy, grpcio,
protobuf, onnxruntime, ai-edge-litert, cryptography); the build fails if either ever names anything
else, so the device wheel can never pull in torch or a server-only package by accident.
`proto/generate.py` is left out: it needs grpcio-tools and only regenerates the committed code.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
DIST_NAME = "autohas-edge-device"
IMPORT_ROOT = "autohas_edge"
#: repository folder -> installed package `autohas_edge.<name>`; each folder ships whole
PACKAGES: Mapping[str, str] = {"device_sdk": "device_sdk", "proto": "proto", "common": "common"}
#: repository files inside those folders that a device never needs
EXCLUDED_FILES = frozenset({"proto/generate.py"})  # needs grpcio-tools; `make proto` only
#: the only distributions the device wheel may depend on (PEP 503 normalised names)
#: (cryptography: Ed25519 verification of bundle signatures, device_sdk/signing.py)
ALLOWED_DEPENDENCIES = frozenset(
    {"numpy", "grpcio", "protobuf", "onnxruntime", "ai-edge-litert", "cryptography"}
)
#: path components that must never appear in the device wheel
FORBIDDEN_PARTS = frozenset({"server", "export", "torch"})
#: an import of torch or of the server or exporter, in any shipped module
FORBIDDEN_IMPORT = re.compile(
    r"^\s*(?:import|from)\s+(?:torch|autohas_edge\.(?:server|export))\b", re.MULTILINE
)
DESCRIPTION = "autohas-edge device SDK: run and personalise exported models on a device (no torch)."
README = """\
# autohas-edge-device

The device-only part of autohas-edge: `autohas_edge.device_sdk` (run, share and fine-tune exported
ONNX / TFLite bundles with numpy, onnxruntime and ai-edge-litert), the generated gRPC client code
`autohas_edge.proto` and the shared numpy layer `autohas_edge.common`. No torch, no server code.

    from autohas_edge.device_sdk import Hub

    hub = Hub("/data/autohas", trusted_keys=[open("bundles.pub.pem").read()])
    hub.install("path/to/bundle", "gestures")  # signed by the key the app pins
    model = hub.model("gestures", app_id="com.example.keyboard")
    probs = model.predict(x)
    model.fine_tune(x_user, y_user)

It provides the same `autohas_edge.device_sdk` as the full `autohas-edge` distribution: install one
of the two, not both.
"""
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class DeviceWheelError(RuntimeError):
    """The device wheel cannot be built as specified (a dependency or file it must not have)."""


def normalize(name: str) -> str:
    """PEP 503 normalised distribution name (`Ai_Edge.LiteRT` -> `ai-edge-litert`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The normalised distribution name a PEP 508 requirement string refers to."""
    match = _REQUIREMENT_NAME.match(requirement)
    if match is None:
        raise DeviceWheelError(f"cannot parse requirement {requirement!r}")
    return normalize(match.group(1))


def read_root_project(root: Path = ROOT) -> dict[str, Any]:
    """The `[project]` table of the repository's (only) `pyproject.toml`."""
    with (root / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["project"]


def device_dependencies(project: Mapping[str, Any]) -> list[str]:
    """The root project's base dependencies plus its `device` extra, checked against the allow-list."""
    requirements = [*project.get("dependencies", []), *project["optional-dependencies"]["device"]]
    names = {requirement_name(r) for r in requirements}
    unexpected = names - ALLOWED_DEPENDENCIES
    if unexpected:
        raise DeviceWheelError(
            f"the device wheel may depend only on {sorted(ALLOWED_DEPENDENCIES)}; the root "
            f"pyproject's base dependencies + [device] extra also name {sorted(unexpected)}"
        )
    return requirements


def source_files(root: Path = ROOT) -> dict[str, Path]:
    """Every file the wheel ships: its path inside the wheel -> its path in the repository."""
    files: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        base = root / folder
        if not (base / "__init__.py").is_file():
            raise DeviceWheelError(f"{base} is not a package (no __init__.py)")
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(root)
            if not path.is_file() or rel.as_posix() in EXCLUDED_FILES:
                continue
            if any(p == "__pycache__" or p.startswith(".") for p in rel.parts) or path.suffix in (
                ".pyc",
                ".pyo",
            ):
                continue
            inside = Path(IMPORT_ROOT, package, *rel.parts[1:]).as_posix()
            files[inside] = path
    return files


def stage(staging: Path, root: Path = ROOT) -> list[str]:
    """Copy the shipped files into `staging` as installed; returns the dotted package names."""
    files = source_files(root)
    for inside, path in files.items():
        target = staging / inside
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    directories = {Path(inside).parent for inside in files}
    packages = {d.as_posix().replace("/", ".") for d in directories}
    return sorted(p for p in packages if p != IMPORT_ROOT)


def render_pyproject(project: Mapping[str, Any], packages: Sequence[str], staging: Path) -> str:
    """The generated `pyproject.toml` of the device distribution (TOML strings written as JSON)."""

    def array(items: Iterable[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    package_data: dict[str, list[str]] = {}
    for package in packages:
        folder = staging / package.replace(".", "/")
        data = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix != ".py")
        if data:
            package_data[package] = data
    lines = [
        "[build-system]",
        'requires = ["setuptools>=77"]',
        'build-backend = "setuptools.build_meta"',
        "",
        "[project]",
        f"name = {json.dumps(DIST_NAME)}",
        f"version = {json.dumps(project['version'])}",
        f"description = {json.dumps(DESCRIPTION)}",
        'readme = "README.md"',
        f"requires-python = {json.dumps(project.get('requires-python', '>=3.10'))}",
    ]
    if isinstance(project.get("license"), str):
        lines.append(f"license = {json.dumps(project['license'])}")
    lines += [
        f"dependencies = {array(device_dependencies(project))}",
        "",
        "[tool.setuptools]",
        f"packages = {array(packages)}",
        "include-package-data = false",
        "",
        "[tool.setuptools.package-data]",
        *(f"{json.dumps(p)} = {array(names)}" for p, names in package_data.items()),
        "",
    ]
    return "\n".join(lines)


def _has_modern_setuptools() -> bool:
    """Whether this interpreter can build the wheel itself (setuptools >= 77, SPDX licences)."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    return int(setuptools.__version__.split(".")[0]) >= 77


def wheel_names(wheel: Path) -> list[str]:
    """Every path inside a wheel (a zip archive)."""
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def check_wheel(wheel: Path) -> None:
    """Refuse a device wheel with a top-level name but `autohas_edge`, or server/export/torch code."""
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            parts = name.split("/")
            if parts[0].endswith(".dist-info"):
                continue
            if parts[0] != IMPORT_ROOT:
                raise DeviceWheelError(f"{wheel.name}: unexpected top-level name {name!r}")
            if FORBIDDEN_PARTS & {Path(p).stem for p in parts[1:]}:
                raise DeviceWheelError(f"{wheel.name}: server, export or torch file {name!r}")
            if name.endswith(".py"):
                found = FORBIDDEN_IMPORT.search(archive.read(name).decode("utf-8"))
                if found:
                    raise DeviceWheelError(f"{wheel.name}: {name} has {found.group(0).strip()!r}")


def build_wheel(out: Path, root: Path = ROOT, *, quiet: bool = True) -> Path:
    """Build `autohas-edge-device` into `out` (created if needed); returns the wheel's path."""
    project = read_root_project(root)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autohas-device-wheel-") as tmp:
        staging = Path(tmp) / "src"
        built = Path(tmp) / "wheels"
        staging.mkdir()
        packages = stage(staging, root)
        (staging / "pyproject.toml").write_text(render_pyproject(project, packages, staging))
        (staging / "README.md").write_text(README)
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(built)]
        if _has_modern_setuptools():
            command.append("--no-build-isolation")  # no index needed; else pip fetches setuptools
        if quiet:
            command.append("-q")
        subprocess.run([*command, str(staging)], check=True)
        (wheel,) = built.glob("*.whl")
        check_wheel(wheel)
        target = out / wheel.name
        shutil.copyfile(wheel, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `python -m tools.build_device_wheel [--out DIR]`; prints the wheel's path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="output folder (dist/)")
    parser.add_argument("--verbose", action="store_true", help="show pip's build output")
    args = parser.parse_args(argv)
    try:
        wheel = build_wheel(args.out, quiet=not args.verbose)
    except DeviceWheelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
