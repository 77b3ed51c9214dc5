"""One installed bundle loaded in one format: its feature extractor and its downloaded head."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autohas_edge.device_sdk.bundle import Manifest, load_head, verify_files
from autohas_edge.device_sdk.errors import BundleError
from autohas_edge.device_sdk.finetune import Head, InputStatistics
from autohas_edge.device_sdk.runtime import Runtime, open_runtime, runnable_formats
from autohas_edge.device_sdk.train_graph import TrainStepGraph, open_train_step


class Engine:
    """One installed bundle loaded in one format; shared by every handle that uses it."""

    def __init__(self, directory: Path, fmt: str, verified: list[str], threads: int | None) -> None:
        self.directory = directory
        self.manifest = Manifest.load(directory)
        self.format = pick_format(fmt, verified, directory.name)
        # Re-hash what will run: catches files changed on disk since they were verified.
        artifact = self.manifest.artifact(self.format, "features")
        verify_files(directory, self.manifest, [artifact.file, self.manifest.fine_tuning.head_file])
        self.features: Runtime = open_runtime(directory, artifact, threads)
        self.base_head = Head(*load_head(directory, self.manifest))
        # The training data's per-channel statistics, for trainable "input+head" (None: older bundle).
        self.input_statistics = InputStatistics.from_manifest(
            self.manifest.raw["fine_tuning"].get("input_statistics"), self.manifest.input_shape[0]
        )
        # The head's train-step graph in this format's runtime; None for bundles without one (numpy).
        self.trainer: TrainStepGraph | None = open_train_step(
            directory, self.manifest, self.format, threads
        )

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Features `[n, D]` of validated float32 input."""
        return self.features.run(x)


def pick_format(requested: str, verified: list[str], bundle: str) -> str:
    """The format to run: `requested`, or the first runnable verified one for "auto"."""
    runnable = runnable_formats(verified)
    if requested == "auto" and runnable:
        return runnable[0]
    if requested in runnable:
        return requested
    raise BundleError(
        f"format {requested!r} is not available for bundle {bundle}: verified {runnable}"
    )
