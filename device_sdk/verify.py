"""Verify a bundle before use: file hashes, head consistency, and each artifact's reference outputs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autohas_edge.device_sdk.bundle import Manifest, load_head, load_npz, verify_files
from autohas_edge.device_sdk.errors import BundleVerificationError
from autohas_edge.device_sdk.runtime import available_runtimes, open_runtime

#: float artifacts: largest |output - reference| allowed, times max(1, max |reference|). The export
#: checks 1e-4 on its own machine; another CPU's kernels may round differently, hence the slack.
FLOAT_TOLERANCE = 1e-3
#: int8 artifacts without a recorded export-time argmax agreement must reach this one
INT8_AGREEMENT = 0.75


@dataclass(frozen=True)
class VerificationReport:
    """What was checked: the files hashed and, per format, the worst relative error seen."""

    files: tuple[str, ...]
    formats: dict[str, float]


def verify_bundle(
    bundle_dir: Path, formats: Iterable[str] | None = None, threads: int | None = None
) -> VerificationReport:
    """Verify hashes of the needed files and reference outputs of `formats` (all runnable when None)."""
    bundle_dir = Path(bundle_dir)
    manifest = Manifest.load(bundle_dir)
    chosen = _choose_formats(manifest, formats)
    files = manifest.required_files(None if formats is None else chosen)
    verify_files(bundle_dir, manifest, files)
    ref = load_npz(bundle_dir / manifest.reference_file, ("x", "logits", "features"))
    weight, bias = load_head(bundle_dir, manifest)
    _check(
        "head.npz applied to reference features",
        ref["features"] @ weight.T + bias,
        ref["logits"],
        FLOAT_TOLERANCE,
    )
    errors = {fmt: _verify_format(bundle_dir, manifest, fmt, ref, threads) for fmt in chosen}
    return VerificationReport(tuple(files), errors)


def _choose_formats(manifest: Manifest, formats: Iterable[str] | None) -> list[str]:
    runnable = [f for f in manifest.formats() if f.split("-")[0] in available_runtimes()]
    if formats is None:
        chosen = runnable
    else:
        chosen = list(dict.fromkeys(formats))
        missing = [f for f in chosen if f not in runnable]
        if missing:
            raise BundleVerificationError(
                f"format(s) {missing} not usable here: the bundle has {manifest.formats()}, "
                f"installed runtimes are {available_runtimes()}"
            )
    if not chosen:
        raise BundleVerificationError(
            f"no usable format: bundle has {manifest.formats()}, installed runtimes {available_runtimes()}"
        )
    return chosen


def _verify_format(
    bundle_dir: Path, manifest: Manifest, fmt: str, ref: dict[str, np.ndarray], threads: int | None
) -> float:
    x = ref["x"].astype(np.float32)
    if x.shape[1:] != manifest.input_shape:
        raise BundleVerificationError(
            f"reference x is {x.shape[1:]}, the model input {manifest.input_shape}"
        )
    weight, bias = load_head(bundle_dir, manifest)
    worst = 0.0
    for role, key in (("model", "logits"), ("features", "features")):
        artifact = manifest.artifact(fmt, role)
        out = open_runtime(bundle_dir, artifact, threads).run(x)
        what = f"{artifact.file} ({fmt} {role})"
        _check_shape(what, out, ref[key])
        logits = out @ weight.T + bias if role == "features" else out
        agreement = float(np.mean(logits.argmax(1) == ref["logits"].argmax(1))) if len(x) else 1.0
        if fmt.endswith("int8"):
            worst = max(worst, _max_error(out, ref[key]))
            needed = _recorded_agreement(manifest, artifact.file) - 1.0 / max(len(x), 1)
        else:
            worst = max(worst, _check(what, out, ref[key], FLOAT_TOLERANCE))
            needed = 1.0 - 1.0 / max(len(x), 1)  # one near-tie may flip on another CPU
        if agreement < needed - 1e-9:
            raise BundleVerificationError(
                f"{what}: top class matches reference.npz on {agreement:.0%} of inputs"
            )
    return worst


def _recorded_agreement(manifest: Manifest, file: str) -> float:
    records = (manifest.raw.get("verification") or {}).get("artifacts") or {}
    return float((records.get(file) or {}).get("reference_agreement", INT8_AGREEMENT))


def _check_shape(what: str, out: np.ndarray, ref: np.ndarray) -> None:
    if out.shape != ref.shape:
        raise BundleVerificationError(f"{what}: output shape {out.shape} != reference {ref.shape}")


def _max_error(out: np.ndarray, ref: np.ndarray) -> float:
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    return float(np.max(np.abs(out.astype(np.float64) - ref))) / scale if ref.size else 0.0


def _check(what: str, out: np.ndarray, ref: np.ndarray, tolerance: float) -> float:
    _check_shape(what, out, ref)
    err = _max_error(out, ref)
    if not np.isfinite(err) or err > tolerance:
        raise BundleVerificationError(
            f"{what}: differs from reference.npz by {err:.3g} (> {tolerance:g})"
        )
    return err
