"""The device-only wheel `autohas-edge-device` (tools/build_device_wheel.py), installed in a fresh venv.

One module-scoped venv (no system site packages, so no torch) gets the wheel and `proto-plus` (whose
top-level `proto` package would clash with a top-level `proto` of ours). In it: a real exported
bundle is installed into a `Hub`, predicted on and fine-tuned in both formats; `import torch`,
the server and the exporter all fail; and proto-plus's `proto` imports beside our generated code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from autohas_edge.server.demo.population import global_test_split, make_user
from tools.build_device_wheel import (
    DeviceWheelError,
    build_wheel,
    check_wheel,
    device_dependencies,
)

ROOT = Path(__file__).resolve().parents[1]
TASK = "signals"
#: the only distributions the device wheel may require
DEVICE_DEPENDENCIES = {
    "numpy",
    "grpcio",
    "protobuf",
    "onnxruntime",
    "ai-edge-litert",
    "cryptography",
}
#: repository folder -> installed folder, for everything the device wheel ships
SHIPPED = {
    "device_sdk": "autohas_edge/device_sdk",
    "proto": "autohas_edge/proto",
    "common": "autohas_edge/common",
}

#: the tests that build, install and run the wheel (the first pays for the venv and the bundle)
slow = pytest.mark.slow

DEVICE_SCRIPT = textwrap.dedent("""
    import importlib.util, json, sys

    import numpy as np
    import autohas_edge
    import autohas_edge.device_sdk as sdk
    from autohas_edge.device_sdk import Hub

    bundle, data_path, hub_dir, task, key = sys.argv[1:6]
    data = np.load(data_path)
    x, y, x_eval = data["x"], data["y"], data["x_eval"]
    out = {"sdk_file": sdk.__file__, "namespace": list(autohas_edge.__path__),
           "has_init": getattr(autohas_edge, "__file__", None) is not None}
    hub = Hub(hub_dir, trusted_keys=[open(key).read()])
    hub.install(bundle, task)
    out["formats"] = hub.installed_formats(task)
    for fmt in ("onnx", "tflite"):
        model = hub.model(task, app_id=f"com.{fmt}", private=True, format=fmt)
        probs = model.predict(x_eval[:4])
        result = model.fine_tune(x, y)
        out[fmt] = {
            "shape": list(probs.shape),
            "sums": [float(s) for s in probs.sum(axis=1)],
            "accepted": result.accepted,
            "version": [result.previous_version, result.version],
            "changed": bool(not np.allclose(model.predict(x_eval[:4]), probs)),
        }
    missing = {}
    for name in ("torch", "autohas_edge.server", "autohas_edge.export", "autohas_edge.proto.generate"):
        try:
            __import__(name)
            missing[name] = None
        except ImportError as error:
            missing[name] = type(error).__name__
    out["import_errors"] = missing
    out["torch_spec"] = importlib.util.find_spec("torch") is not None
    out["torch_loaded"] = any(m == "torch" or m.startswith("torch.") for m in sys.modules)
    print(json.dumps(out))
""")

PROTO_PLUS_SCRIPT = textwrap.dedent("""
    import importlib.metadata as md, json

    import proto  # proto-plus
    from autohas_edge.proto.autohas.v1 import personalization_pb2 as pb
    from autohas_edge.proto.autohas.v1 import personalization_pb2_grpc as pb_grpc

    messages = sorted(pb.DESCRIPTOR.message_types_by_name)
    sample = getattr(pb, messages[0])()
    top = sorted({f.parts[0] for f in md.distribution("autohas-edge-device").files
                  if not f.parts[0].endswith(".dist-info")})
    print(json.dumps({
        "proto_file": proto.__file__,
        "proto_plus": hasattr(proto, "Message") and hasattr(proto, "Field"),
        "proto_dist": md.distribution("proto-plus").version,
        "pb_file": pb.__file__,
        "package": pb.DESCRIPTOR.package,
        "roundtrip": type(sample).FromString(sample.SerializeToString()) == sample,
        "grpc_module": pb_grpc.__name__,
        "top_level_installed": top,
        "top_level_txt": md.distribution("autohas-edge-device").read_text("top_level.txt").split(),
    }))
""")


def _clean_env() -> dict[str, str]:
    """This process's environment without anything that would leak the repository or its venv."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _venv_python(venv: Path) -> Path:
    """The interpreter of a venv (POSIX or Windows layout)."""
    posix = venv / "bin" / "python"
    return posix if posix.exists() else venv / "Scripts" / "python.exe"


def _run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a command outside the repository with a clean environment; fail with its stderr."""
    run = subprocess.run(
        command, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout
    )
    assert run.returncode == 0, f"{command[:4]} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}"
    return run


def _last_json(run: subprocess.CompletedProcess[str]) -> dict:
    """The JSON object a script printed on its last line."""
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def device_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The device wheel, built by the same code as `make device-wheel`."""
    return build_wheel(tmp_path_factory.mktemp("device-dist"))


@pytest.fixture(scope="module")
def device_venv(device_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv (no system site packages) with the device wheel and proto-plus installed by pip."""
    work = tmp_path_factory.mktemp("device-venv")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=work, timeout=180)
    config = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in config
    python = str(_venv_python(venv))
    _run([python, "-m", "pip", "install", "-q", str(device_wheel), "proto-plus"], work, 600)
    _run([python, "-m", "pip", "check"], cwd=work, timeout=120)
    return venv


@slow
@pytest.mark.timeout(900)
def test_the_wheel_ships_only_the_device_packages(device_wheel: Path) -> None:
    with zipfile.ZipFile(device_wheel) as archive:
        names = archive.namelist()
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(f"{info}/METADATA").decode()
        top_level_txt = archive.read(f"{info}/top_level.txt").decode().split()
        record = [line.split(",")[0] for line in archive.read(f"{info}/RECORD").decode().split()]
    expected = {
        f"{installed}/{path.relative_to(ROOT / folder).as_posix()}"
        for folder, installed in SHIPPED.items()
        for path in (ROOT / folder).rglob("*")
        if path.is_file()
        and not any(p == "__pycache__" or p.startswith(".") for p in path.parts[len(ROOT.parts) :])
        and path.suffix != ".pyc"
    } - {"autohas_edge/proto/generate.py"}
    shipped = {n for n in names if not n.startswith(info + "/")}
    assert shipped == expected
    assert (
        "autohas_edge/__init__.py" not in shipped
    )  # a namespace package, shared with autohas-edge
    assert "autohas_edge/proto/autohas/v1/personalization.proto" in shipped
    assert not any(
        part.split(".")[0] in {"server", "export", "torch", "generate"}
        for name in shipped
        for part in name.split("/")
    )
    assert top_level_txt == ["autohas_edge"]
    assert {n.split("/")[0] for n in record if not n.startswith(info + "/")} == {"autohas_edge"}
    assert "Name: autohas-edge-device" in metadata
    requires = re.findall(r"^Requires-Dist: *([A-Za-z0-9._-]+)", metadata, re.MULTILINE)
    assert {re.sub(r"[-_.]+", "-", r).lower() for r in requires} == DEVICE_DEPENDENCIES


@slow
@pytest.mark.timeout(900)
def test_a_fresh_venv_installs_predicts_and_fine_tunes_without_torch(
    device_venv: Path, tiny_bundle: Path, tmp_path: Path, signing_key_file: Path
) -> None:
    from autohas_edge.export.signing import public_key_path

    manifest = json.loads((Path(tiny_bundle) / "manifest.json").read_text())
    x, y = global_test_split(manifest["dataset"]["name"])
    user = make_user(x, y, 3, "reverse", favourite_classes=2, skew=0.9)
    data = tmp_path / "user.npz"
    np.savez(data, x=user.x_tune, y=user.y_tune, x_eval=user.x_eval)
    script = [str(_venv_python(device_venv)), "-I", "-c", DEVICE_SCRIPT]
    run = _run(
        [
            *script,
            str(tiny_bundle),
            str(data),
            str(tmp_path / "hub"),
            TASK,
            str(public_key_path(signing_key_file)),
        ],
        tmp_path,
        timeout=300,
    )
    out = _last_json(run)
    site = device_venv.resolve()
    assert Path(out["sdk_file"]).resolve().is_relative_to(site), out["sdk_file"]
    assert [Path(p).resolve().is_relative_to(site) for p in out["namespace"]] == [True]
    assert out["has_init"] is False
    assert {"onnx", "tflite"} <= set(out["formats"])
    classes = manifest["fine_tuning"]["num_classes"]
    for fmt in ("onnx", "tflite"):
        assert out[fmt]["shape"] == [4, classes]
        np.testing.assert_allclose(out[fmt]["sums"], 1.0, atol=1e-4)
        assert out[fmt]["accepted"] is True and out[fmt]["version"][1] > out[fmt]["version"][0]
        assert out[fmt]["changed"] is True
    assert out["import_errors"] == {
        "torch": "ModuleNotFoundError",
        "autohas_edge.server": "ModuleNotFoundError",
        "autohas_edge.export": "ModuleNotFoundError",
        "autohas_edge.proto.generate": "ModuleNotFoundError",
    }
    assert out["torch_spec"] is False and out["torch_loaded"] is False


@slow
@pytest.mark.timeout(900)
def test_proto_plus_and_the_generated_code_import_in_one_process(
    device_venv: Path, tmp_path: Path
) -> None:
    script = [str(_venv_python(device_venv)), "-I", "-c", PROTO_PLUS_SCRIPT]
    out = _last_json(_run(script, tmp_path, timeout=120))
    site = device_venv.resolve()
    assert out["proto_plus"] is True and out["proto_dist"]
    assert Path(out["proto_file"]).resolve().is_relative_to(site)
    assert Path(out["proto_file"]).parent.name == "proto"  # proto-plus's top-level package
    assert Path(out["pb_file"]).resolve().is_relative_to(site)
    assert Path(out["pb_file"]).parts[-5:-1] == ("autohas_edge", "proto", "autohas", "v1")
    assert out["package"] == "autohas.v1" and out["roundtrip"] is True
    assert out["grpc_module"] == "autohas_edge.proto.autohas.v1.personalization_pb2_grpc"
    assert out["top_level_installed"] == ["autohas_edge"]
    assert out["top_level_txt"] == ["autohas_edge"]


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        ("proto/__init__.py", "", "top-level name"),
        ("autohas_edge/server/__init__.py", "", "server, export or torch"),
        ("autohas_edge/device_sdk/x.py", "def f():\n    import torch\n", "import torch"),
        ("autohas_edge/common/x.py", "from autohas_edge.export import a\n", "autohas_edge.export"),
    ],
)
def test_check_wheel_refuses_foreign_names_and_torch_code(
    tmp_path: Path, name: str, text: str, match: str
) -> None:
    wheel = tmp_path / "autohas_edge_device-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("autohas_edge/device_sdk/__init__.py", '"""Torch-free."""\n')
        archive.writestr(name, text)
    with pytest.raises(DeviceWheelError, match=match):
        check_wheel(wheel)


def test_a_dependency_outside_the_allow_list_stops_the_build() -> None:
    project = {
        "dependencies": ["numpy>=1.26", "grpcio>=1.60", "protobuf>=5.26"],
        "optional-dependencies": {"device": ["onnxruntime>=1.18", "Ai_Edge.LiteRT>=1.0"]},
    }
    assert len(device_dependencies(project)) == 5
    project["dependencies"].append("torch==2.13.0")
    with pytest.raises(DeviceWheelError, match="torch"):
        device_dependencies(project)
