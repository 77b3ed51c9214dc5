"""Regenerate the committed Python code for every `.proto` file under `proto/` (`make proto`).

Run from the repository root: `python -m autohas_edge.proto.generate`. With `--check`, regenerate
into a temporary folder and exit non-zero if anything differs from what is committed.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")
IMPORT_ROOT = Path("autohas_edge")  # `proto/` is installed as `autohas_edge.proto`


def proto_files() -> list[Path]:
    """All `.proto` sources, relative to the repository root."""
    return sorted(p.relative_to(ROOT) for p in (ROOT / "proto").rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (grpcio-tools) on every proto; returns the generated files relative to `out_dir`.

    Installed, `proto/` is the package `autohas_edge.proto`, so protoc runs on a staged copy laid out
    as `autohas_edge/proto/autohas/v1/*.proto`: the generated imports then read
    `from autohas_edge.proto.autohas.v1 import ...`, the installed path of the proto package `autohas.v1`.
    """
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as staging_dir:
        staging = Path(staging_dir)
        files = []
        for rel in proto_files():
            staged = staging / IMPORT_ROOT / rel
            staged.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / rel, staged)
            files.append(str(staged.relative_to(staging)))
        raw = out_dir / "raw"
        raw.mkdir()
        args = ["protoc", f"-I{staging}", f"-I{include}", f"--python_out={raw}", f"--pyi_out={raw}"]
        args += [f"--grpc_python_out={raw}", *[str(staging / f) for f in files]]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {files}")
    for produced in raw.rglob("*"):
        if produced.is_file():
            target = out_dir / produced.relative_to(raw / IMPORT_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(produced, target)
    shutil.rmtree(raw)
    return sorted(
        p.relative_to(out_dir) for p in out_dir.rglob("*") if p.name.endswith(GENERATED_SUFFIXES)
    )


def check() -> list[str]:
    """Return the generated files that differ from (or are missing in) the committed tree."""
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        return [
            str(rel)
            for rel in generated
            if not (ROOT / rel).exists()
            or not filecmp.cmp(Path(tmp) / rel, ROOT / rel, shallow=False)
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args()
    if args.check:
        stale = check()
        for rel in stale:
            print(f"stale generated file: {rel} (run `make proto`)", file=sys.stderr)
        return 1 if stale else 0
    with tempfile.TemporaryDirectory() as tmp:
        for rel in generate(Path(tmp)):
            shutil.copyfile(Path(tmp) / rel, ROOT / rel)
            print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
