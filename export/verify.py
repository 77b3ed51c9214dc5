"""Verify a bundle's artifacts against the torch reference outputs; no torch import, ever.

Used twice: by `export` right after writing each artifact, and by `autohas verify` (or a device) on a
finished bundle, which also re-checks every file's sha256 against the manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autohas_edge.common.filetable import MANIFEST, FileEntry, file_problem
from autohas_edge.device_sdk.signing import SIGNATURE_FILE
from autohas_edge.export.errors import ExportError, VerificationError
from autohas_edge.export.manifest import HEAD_FILE, REFERENCE_FILE, read_manifest
from autohas_edge.export.runtimes import load_runner

#: float artifacts: largest allowed |artifact - torch| on any reference output
FLOAT_TOLERANCE = 1e-4
#: int8 artifacts: largest allowed test-accuracy drop against the float model (1 point)
INT8_MAX_ACCURACY_DROP = 0.01


@dataclass(frozen=True)
class Reference:
    """Reference inputs and the torch model's logits and features for them."""

    x: np.ndarray
    logits: np.ndarray
    features: np.ndarray


@dataclass(frozen=True)
class Head:
    """The classification head: logits = features @ weight.T + bias."""

    weight: np.ndarray
    bias: np.ndarray

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Apply the head to features `[n, D]`."""
        logits: np.ndarray = features @ self.weight.T + self.bias
        return logits


@dataclass
class ArtifactCheck:
    """The outcome of running one artifact on the reference inputs."""

    file: str
    format: str
    role: str
    passed: bool
    max_abs_diff: float | None = None
    argmax_agreement: float | None = None
    problem: str = ""
    skipped: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class VerificationReport:
    """Hash and reference-output checks of one bundle."""

    bundle: str
    checks: list[ArtifactCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when no file and no artifact failed."""
        return not self.problems and all(c.passed or c.skipped for c in self.checks)

    def raise_if_failed(self) -> None:
        """Raise VerificationError with the first problem, if any."""
        if self.problems:
            path, _, problem = self.problems[0].partition(": ")
            raise VerificationError(path, problem)


def load_reference(path: str | Path) -> Reference:
    """Read `reference.npz`."""
    with np.load(path) as data:
        return Reference(data["x"], data["logits"], data["features"])


def load_head(path: str | Path) -> Head:
    """Read `head.npz` (`weight` [C, D], `bias` [C])."""
    with np.load(path) as data:
        return Head(data["weight"], data["bias"])


def predict_logits(outputs: np.ndarray, role: str, head: Head) -> np.ndarray:
    """Logits from an artifact's outputs: as they are for "model", through the head for "features"."""
    return head.logits(outputs) if role == "features" else outputs


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of `logits` against labels `y`."""
    return float(np.mean(np.argmax(logits, axis=1) == y))


def measure(
    outputs: np.ndarray, role: str, reference: Reference, head: Head
) -> tuple[float, float]:
    """(max abs diff against the torch outputs, fraction of reference inputs with the same argmax)."""
    expected = reference.features if role == "features" else reference.logits
    if outputs.shape != expected.shape:
        return float("inf"), 0.0
    diff = float(np.max(np.abs(outputs.astype(np.float64) - expected)))
    same = np.argmax(predict_logits(outputs, role, head), axis=1) == np.argmax(
        reference.logits, axis=1
    )
    return diff, float(np.mean(same))


def check_float(
    path: Path, fmt: str, role: str, outputs: np.ndarray, reference: Reference, head: Head
) -> ArtifactCheck:
    """A float artifact passes with max abs diff <= FLOAT_TOLERANCE and argmax agreement on every input."""
    diff, agreement = measure(outputs, role, reference, head)
    problem = ""
    if diff > FLOAT_TOLERANCE:
        problem = (
            f"{path}: max abs diff {diff:.3g} > {FLOAT_TOLERANCE:g} against the torch reference"
        )
    elif agreement < 1.0:
        problem = (
            f"{path}: argmax differs from torch on {1 - agreement:.1%} of the reference inputs"
        )
    return ArtifactCheck(path.name, fmt, role, not problem, diff, agreement, problem)


def check_int8(
    path: Path,
    fmt: str,
    role: str,
    outputs: np.ndarray,
    reference: Reference,
    head: Head,
    min_agreement: float,
) -> ArtifactCheck:
    """An int8 artifact passes when it agrees with torch's argmax at least as often as `min_agreement`."""
    diff, agreement = measure(outputs, role, reference, head)
    problem = ""
    if agreement < min_agreement:
        problem = (
            f"{path}: int8 argmax agreement {agreement:.1%} on the reference inputs, "
            f"below the {min_agreement:.1%} measured at export"
        )
    return ArtifactCheck(path.name, fmt, role, not problem, diff, agreement, problem)


def run_artifact(
    path: Path, runtime: str, x: np.ndarray, num_threads: int | None = None
) -> np.ndarray:
    """Run the artifact at `path` on `x` with its real runtime."""
    try:
        runner = load_runner(path, runtime, num_threads)
    except ExportError:
        raise
    except Exception as err:  # a runtime refusing the file is a verification failure, not a crash
        raise VerificationError(path, f"cannot be loaded by the {runtime} runtime ({err})") from err
    return runner.run(np.ascontiguousarray(x, dtype=np.float32))


def check_files(bundle: Path, manifest: dict[str, Any]) -> list[str]:
    """Problems with the bundle's files: unsafe names, missing, unlisted, or not matching sha256/size."""
    listed = manifest["files"]
    names = [*listed, *(a["file"] for a in manifest["artifacts"])]
    unsafe = [
        f"{bundle / MANIFEST}: {n!r} is not a plain file name inside the bundle"
        for n in names
        if not _plain(n)
    ]
    if unsafe:
        return unsafe  # never hash or run anything outside the bundle
    problems = [p for name, entry in listed.items() if (p := _file_problem(bundle / name, entry))]
    extra = [
        p
        for p in sorted(bundle.iterdir())
        if p.is_file() and p.name not in listed and p.name not in (MANIFEST, SIGNATURE_FILE)
    ]
    problems += [
        f"{path}: not listed in manifest.json" for path in extra if not path.name.startswith(".")
    ]
    missing = [a["file"] for a in manifest["artifacts"] if a["file"] not in listed]
    return problems + [
        f"{bundle / name}: artifact not listed in manifest files" for name in missing
    ]


def _plain(name: object) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and Path(name).name == name
        and "\\" not in name
    )


def _file_problem(path: Path, entry: dict[str, Any]) -> str:
    # read leniently: a row with a missing or mistyped field is a mismatch to report, not a crash
    size = entry.get("bytes")
    return file_problem(
        path, FileEntry(str(entry.get("sha256")), size if isinstance(size, int) else -1)
    )


def verify_bundle(bundle_dir: str | Path, num_threads: int | None = None) -> VerificationReport:
    """Re-check a bundle: every file's sha256 and size, then every artifact on `reference.npz`."""
    bundle = Path(bundle_dir)
    manifest = read_manifest(bundle)
    report = VerificationReport(str(bundle), problems=check_files(bundle, manifest))
    bad = {p.split(": ", 1)[0] for p in report.problems}
    if str(bundle / REFERENCE_FILE) in bad or str(bundle / HEAD_FILE) in bad:
        return report  # without trustworthy references nothing else can be checked
    reference, head = load_reference(bundle / REFERENCE_FILE), load_head(bundle / HEAD_FILE)
    recorded = manifest.get("verification", {}).get("artifacts", {})
    for artifact in manifest["artifacts"]:
        path = bundle / artifact["file"]
        if str(path) in bad:
            continue
        expected = recorded.get(artifact["file"], {})
        check = _check_artifact(path, artifact, reference, head, expected, num_threads)
        report.checks.append(check)
        if check.problem and not check.skipped:
            report.problems.append(check.problem)
    return report


def _check_artifact(
    path: Path,
    artifact: dict[str, Any],
    reference: Reference,
    head: Head,
    recorded: dict[str, Any],
    num_threads: int | None,
) -> ArtifactCheck:
    fmt, role = artifact["format"], artifact["role"]
    runtime = "onnx" if fmt.startswith("onnx") else "tflite"
    try:
        outputs = run_artifact(path, runtime, reference.x, num_threads)
    except ExportError as err:
        skipped = not isinstance(err, VerificationError)  # no interpreter installed: cannot judge
        return ArtifactCheck(path.name, fmt, role, False, problem=str(err), skipped=skipped)
    if not fmt.endswith("-int8"):
        return check_float(path, fmt, role, outputs, reference, head)
    if "reference_agreement" not in recorded:
        return ArtifactCheck(
            path.name,
            fmt,
            role,
            False,
            problem=f"{path}: manifest has no export-time verification for this artifact",
        )
    min_agreement = _slack(recorded["reference_agreement"], reference)
    return check_int8(path, fmt, role, outputs, reference, head, min_agreement)


def _slack(agreement: float, reference: Reference) -> float:
    """Allow one reference input of difference: int8 kernels may round differently on another CPU."""
    return float(agreement) - 1.0 / max(len(reference.x), 1) - 1e-9
