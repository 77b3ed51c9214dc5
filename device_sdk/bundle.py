"""Model bundles (docs/architecture.md §5): parse the manifest and verify files and reference outputs."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autohas_edge.common.filetable import MANIFEST, FileEntry, file_problem, table_from_json
from autohas_edge.device_sdk.errors import BundleError, BundleVerificationError, InvalidInputError
from autohas_edge.device_sdk.finetune import HeadHyperparameters

FORMATS = ("onnx", "tflite", "onnx-int8", "tflite-int8")
#: what `format="auto"` picks first: float before int8 (accuracy), TFLite before ONNX (it ran the
#: exported models 3-10x faster on the benchmark CPU and is what phones ship)
AUTO_ORDER = ("tflite", "onnx", "tflite-int8", "onnx-int8")
ROLES = ("model", "features")
#: bounds on the manifest's numbers: a hostile manifest must not make the SDK allocate or loop forever
MAX_CLASSES = 1 << 16
MAX_FEATURE_DIM = 1 << 16
MAX_INPUT_ELEMENTS = 1 << 24  # values in one example
MAX_BATCH = 1 << 16
MAX_FILE_BYTES = 1 << 40


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of an artifact; `shape[0]` is the batch dimension."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str


@dataclass(frozen=True)
class Artifact:
    """One exported model file: a format (runtime + precision) and a role (full model or features)."""

    format: str
    role: str
    file: str
    sha256: str
    bytes: int
    batch: int | None  # None: any batch size; an int: the artifact takes exactly that many rows
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def runtime(self) -> str:
        """The runtime family that executes this artifact: "onnx" or "tflite"."""
        return self.format.split("-", 1)[0]


@dataclass(frozen=True)
class FineTuning:
    """The classification head and the hyper-parameters for training it on the device."""

    head_file: str
    feature_dim: int
    num_classes: int
    hyperparameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    """A parsed `manifest.json`; `raw` keeps every field, including ones this SDK does not use."""

    raw: dict[str, Any]
    artifacts: tuple[Artifact, ...]
    files: dict[str, FileEntry]  # path -> (sha256, bytes)
    fine_tuning: FineTuning
    input_shape: tuple[int, ...]  # one example, without the batch dimension
    label_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes the model predicts."""
        return self.fine_tuning.num_classes

    @property
    def reference_file(self) -> str:
        """Path of the reference inputs/outputs inside the bundle (checked like every file path)."""
        return _reference_file(self.raw)

    def formats(self) -> list[str]:
        """Formats with both a `model` and a `features` artifact, in the order of `FORMATS`."""
        have = {(a.format, a.role) for a in self.artifacts}
        return [f for f in FORMATS if all((f, role) in have for role in ROLES)]

    def artifact(self, fmt: str, role: str) -> Artifact:
        """The artifact of one format and role; BundleError if the bundle has none."""
        for a in self.artifacts:
            if a.format == fmt and a.role == role:
                return a
        raise BundleError(
            f"bundle has no {role!r} artifact in format {fmt!r} (has {self.formats()})"
        )

    def required_files(self, formats: Iterable[str] | None = None) -> list[str]:
        """Files a device needs for `formats` (all listed files when None)."""
        if formats is None:
            return sorted(self.files)
        wanted = set(formats)
        graphs = self.train_step_files()
        artifact_files = {a.file for a in self.artifacts} | set(graphs.values())
        keep = {a.file for a in self.artifacts if a.format in wanted}
        keep |= {file for runtime, file in graphs.items() if runtime in _runtimes(wanted)}
        return sorted(p for p in self.files if p not in artifact_files or p in keep)

    def train_step_files(self) -> dict[str, str]:
        """The head's train-step graph file of each runtime (none in bundles exported before them)."""
        contract = (self.raw.get("fine_tuning") or {}).get("train_step")
        graphs = (contract.get("graphs") or {}) if isinstance(contract, dict) else {}
        return {
            str(runtime): _relative(str(graph["file"]))
            for runtime, graph in graphs.items()
            if isinstance(graph, dict) and "file" in graph
        }

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Parse and validate manifest JSON; BundleError on anything malformed."""
        try:
            raw = json.loads(text)
            return _parse(raw)
        except BundleError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise BundleError(f"malformed manifest.json: {type(exc).__name__}: {exc}") from exc

    @classmethod
    def load(cls, bundle_dir: Path) -> Manifest:
        """Read `bundle_dir/manifest.json`."""
        path = Path(bundle_dir) / MANIFEST
        if not path.is_file():
            raise BundleError(f"{path} does not exist: not a model bundle")
        return cls.from_json(path.read_bytes())


def _runtimes(formats: Iterable[str]) -> set[str]:
    return {f.split("-", 1)[0] for f in formats}


def _tensor(spec: dict[str, Any]) -> TensorSpec:
    return TensorSpec(
        str(spec.get("name", "")), tuple(spec["shape"]), str(spec.get("dtype", "float32"))
    )


def _artifact(a: dict[str, Any]) -> Artifact:
    if a["format"] not in FORMATS or a["role"] not in ROLES:
        raise BundleError(f"unsupported artifact format/role {a['format']!r}/{a['role']!r}")
    batch = a.get("batch", "dynamic")
    return Artifact(
        format=a["format"],
        role=a["role"],
        file=_relative(a["file"]),
        sha256=str(a["sha256"]),
        bytes=_bounded(a["bytes"], "artifact bytes", 0, MAX_FILE_BYTES),
        batch=None if batch in ("dynamic", None, -1) else _bounded(batch, "batch", 1, MAX_BATCH),
        inputs=tuple(_tensor(s) for s in a.get("inputs", [])),
        outputs=tuple(_tensor(s) for s in a.get("outputs", [])),
    )


def _relative(path: str) -> str:
    """Reject absolute paths and `..`: a bundle may only name files inside itself."""
    p = Path(path)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise BundleError(f"bundle file path {path!r} escapes the bundle directory")
    return p.as_posix()


def _input_shape(raw: dict[str, Any], artifacts: tuple[Artifact, ...]) -> tuple[int, ...]:
    spec = raw.get("input") or (raw.get("inputs") or [None])[0]
    if isinstance(spec, dict) and "shape" in spec:
        shape = list(spec["shape"])
        if len(shape) > 1 and isinstance(shape[0], str):
            shape = shape[1:]  # a batch placeholder such as "batch"
    elif artifacts and artifacts[0].inputs:
        shape = list(artifacts[0].inputs[0].shape[1:])
    else:
        raise BundleError("manifest names no input shape")
    if not shape or not all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape
    ):
        raise BundleError(f"input shape {shape} must be positive integers")
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise BundleError(f"input shape {shape} holds more than {MAX_INPUT_ELEMENTS} values")
    return tuple(shape)


def _bounded(value: Any, what: str, low: int, high: int) -> int:
    """An integer manifest value in [low, high] (a whole float such as 10.0 too); BundleError if not."""
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole or not low <= value <= high:
        raise BundleError(f"manifest {what} {value!r} is not an integer in [{low}, {high}]")
    return int(value)


def _reference_file(raw: dict[str, Any]) -> str:
    ref = raw.get("reference")
    return _relative(
        str(ref.get("file", "reference.npz")) if isinstance(ref, dict) else "reference.npz"
    )


def _check_tree(files: Iterable[str]) -> None:
    """Refuse a file table in which one path is also a directory of another (`a` and `a/b`)."""
    paths = set(files)
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in paths:
                raise BundleError(f"bundle lists {parent!r} as a file and {path!r} inside it")


def _parse(raw: dict[str, Any]) -> Manifest:
    artifacts = tuple(_artifact(a) for a in raw["artifacts"])
    files = {_relative(p): entry for p, entry in table_from_json(raw["files"]).items()}
    for a in artifacts:
        own = FileEntry(a.sha256, a.bytes)
        if files.get(a.file, own) != own:
            raise BundleError(f"manifest disagrees with itself about {a.file}'s hash or size")
        files.setdefault(a.file, own)
    for path, entry in files.items():
        _bounded(entry.bytes, f"size of {path}", 0, MAX_FILE_BYTES)
    _check_tree(files)
    fine = _fine_tuning(raw["fine_tuning"])
    for what, path in (("reference file", _reference_file(raw)), ("head file", fine.head_file)):
        if path not in files:
            raise BundleError(f"the {what} {path!r} is not listed in the manifest's files")
    labels = raw.get("label_names") or (raw.get("dataset") or {}).get("label_names") or []
    labels = tuple(str(n) for n in labels) or tuple(str(i) for i in range(fine.num_classes))
    if len(labels) != fine.num_classes:
        raise BundleError(f"{len(labels)} label names for {fine.num_classes} classes")
    return Manifest(raw, artifacts, files, fine, _input_shape(raw, artifacts), labels)


def _fine_tuning(ft: dict[str, Any]) -> FineTuning:
    hyperparameters = dict(ft.get("hyperparameters") or {})
    try:
        HeadHyperparameters.from_mapping(hyperparameters)  # bounded now, not at the first fine-tune
    except InvalidInputError as exc:
        raise BundleError(f"fine_tuning.hyperparameters: {exc}") from exc
    return FineTuning(
        _relative(ft.get("head_file", "head.npz")),
        _bounded(ft["feature_dim"], "fine_tuning.feature_dim", 1, MAX_FEATURE_DIM),
        _bounded(ft["num_classes"], "fine_tuning.num_classes", 1, MAX_CLASSES),
        hyperparameters,
    )


def verify_files(bundle_dir: Path, manifest: Manifest, paths: Iterable[str]) -> None:
    """Check that each path exists with the size and sha256 the manifest lists."""
    for rel in paths:
        if rel not in manifest.files:
            raise BundleVerificationError(f"{rel} is not listed in the manifest's files")
        problem = file_problem(Path(bundle_dir) / rel, manifest.files[rel], rel)
        if problem:
            raise BundleVerificationError(f"bundle file {problem}")


def load_npz(path: Path, keys: Iterable[str]) -> dict[str, np.ndarray]:
    """Load named arrays from an `.npz` without pickle; BundleError when one is missing."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in keys}
    except (OSError, KeyError, ValueError) as exc:
        raise BundleError(f"cannot read {Path(path).name}: {exc}") from exc


def load_head(bundle_dir: Path, manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    """The bundle's classification head `(weight [C, D], bias [C])`, shape-checked."""
    head = load_npz(Path(bundle_dir) / manifest.fine_tuning.head_file, ("weight", "bias"))
    c, d = manifest.num_classes, manifest.fine_tuning.feature_dim
    if head["weight"].shape != (c, d) or head["bias"].shape != (c,):
        raise BundleError(
            f"head shapes {head['weight'].shape}/{head['bias'].shape}, expected ({c}, {d})/({c},)"
        )
    return head["weight"].astype(np.float32), head["bias"].astype(np.float32)
