"""A model handle for one app: predict, embed and fine-tune a task's installed model."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from autohas_edge.device_sdk._validate import as_examples, as_labels
from autohas_edge.device_sdk.bundle import Manifest
from autohas_edge.device_sdk.engine import Engine
from autohas_edge.device_sdk.finetune import (
    Head,
    HeadHyperparameters,
    holdout_split,
    softmax,
    train_head,
)
from autohas_edge.device_sdk.heads import HeadStore
from autohas_edge.device_sdk.store import ModelStore


@dataclass(frozen=True)
class FineTuneResult:
    """The outcome of `Model.fine_tune`: whether the new head was kept, and why."""

    accepted: bool
    version: int  # the personalised version in use afterwards
    previous_version: int
    heldout_accuracy_before: float
    heldout_accuracy_after: float
    train_examples: int
    heldout_examples: int
    seconds: float
    losses: tuple[float, ...]


class Model:
    """An app's handle to a task's model; obtain one with `Hub.model(task_id, app_id=...)`."""

    def __init__(
        self, store: ModelStore, task_id: str, app_id: str, owner: str | None, fmt: str
    ) -> None:
        self.task_id, self.app_id = task_id, app_id
        self._models, self._owner, self._format = store, owner, fmt
        self._lock = threading.RLock()
        self._pointer_stamp: tuple[int, int] | None = None
        self._head_stamp: tuple[int, int] | None = None
        self._sync()

    # -- what the model is --------------------------------------------------------------------------

    @property
    def shared(self) -> bool:
        """True when this app uses the task's shared model (and shares its personalisation)."""
        return self._owner is None

    @property
    def model_id(self) -> str:
        """Id of the installed bundle in use."""
        with self._lock:
            self._sync()
            return self._model_id

    @property
    def format(self) -> str:
        """The artifact format running: "onnx", "tflite", "onnx-int8" or "tflite-int8"."""
        return self._current().format

    @property
    def manifest(self) -> Manifest:
        """The bundle's parsed manifest."""
        return self._current().manifest

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example (no batch dimension)."""
        return self.manifest.input_shape

    @property
    def label_names(self) -> tuple[str, ...]:
        """Class names, index = class id."""
        return self.manifest.label_names

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return self.manifest.num_classes

    @property
    def version(self) -> int:
        """Personalised head version in use (0 = as downloaded)."""
        with self._lock:
            self._sync()
            return self._version

    def versions(self) -> list[int]:
        """All personalised versions kept for this model, 0 first."""
        with self._lock:
            self._sync()
            return self._store.versions()

    def _current(self) -> Engine:
        with self._lock:
            self._sync()
            return self._engine

    # -- inference ----------------------------------------------------------------------------------

    def predict(self, x: Any) -> np.ndarray:
        """Class probabilities: `[C]` for one example, `[n, C]` for a batch."""
        return softmax(self.logits(x))

    def logits(self, x: Any) -> np.ndarray:
        """Unnormalised class scores, with the personalised head: `[C]` or `[n, C]`."""
        batch, single = as_examples(x, self.input_shape)
        with self._lock:
            self._sync()
            engine, head = self._engine, self._head
        out = head.logits(engine.embed(batch))
        return out[0] if single else out

    def embed(self, x: Any) -> np.ndarray:
        """Feature vectors from the exported feature extractor: `[D]` or `[n, D]`."""
        batch, single = as_examples(x, self.input_shape)
        out = self._current().embed(batch)
        return out[0] if single else out

    # -- personalisation ----------------------------------------------------------------------------

    def fine_tune(
        self,
        x: Any,
        y: Any,
        *,
        holdout: float = 0.25,
        seed: int = 0,
        hyperparameters: Mapping[str, Any] | None = None,
    ) -> FineTuneResult:
        """Train the head on the user's examples; keep it only if held-out accuracy improves.

        `holdout` of the examples (stratified by label) are kept out of training and decide: the new
        head is saved as a new version only if it classifies more of them correctly than the current
        one. `hyperparameters` override the manifest's `fine_tuning.hyperparameters`.
        """
        start = time.perf_counter()
        batch, _ = as_examples(x, self.input_shape)
        labels = as_labels(y, len(batch), self.num_classes)
        train, held = holdout_split(labels, holdout, seed)
        hp = HeadHyperparameters.from_mapping(
            {**self.manifest.fine_tuning.hyperparameters, **(hyperparameters or {})}
        )
        with self._lock:
            self._sync()
            previous, current = self._version, self._head
            features = self._engine.embed(batch)
            trained, losses = train_head(current, features[train], labels[train], hp, seed)
            before = current.accuracy(features[held], labels[held])
            diverged = not trained.finite() or not np.isfinite(losses[-1])
            after = -1.0 if diverged else trained.accuracy(features[held], labels[held])
            accepted = after > before
            version = (
                self._save(trained, hp, before, after, len(train), len(held))
                if accepted
                else previous
            )
        return FineTuneResult(
            accepted=accepted,
            version=version,
            previous_version=previous,
            heldout_accuracy_before=before,
            heldout_accuracy_after=after,
            train_examples=len(train),
            heldout_examples=len(held),
            seconds=time.perf_counter() - start,
            losses=tuple(losses),
        )

    def reset(self, version: int = 0) -> None:
        """Go back to the downloaded head (version 0) or to an earlier personalised version."""
        with self._lock, self._models.exclusive():
            self._store.activate(version)
            self._sync()

    def _save(
        self, head: Head, hp: HeadHyperparameters, before: float, after: float, n: int, m: int
    ) -> int:
        meta = {
            "app_id": self.app_id,
            "format": self.format,
            "heldout_accuracy_before": before,
            "heldout_accuracy_after": after,
            "train_examples": n,
            "heldout_examples": m,
            "hyperparameters": hp.__dict__,
            "saved_at": time.time(),
        }
        with self._models.exclusive():
            version = self._store.save(head, meta)
        self._sync()
        return version

    # -- keeping up with other handles and processes ------------------------------------------------

    def _sync(self) -> None:
        """Reload when a new bundle was installed or another handle switched the personalised head."""
        stamp = self._models.pointer_stamp(self.task_id, self._owner)
        if stamp != self._pointer_stamp:
            pointer = self._models.read_pointer(self.task_id, self._owner)
            self._engine = self._models.engine(str(pointer["bundle"]), self._format)
            self._model_id = str(pointer["model_id"])
            heads = self._models.heads_dir(self.task_id, self._owner, self._model_id)
            self._store = HeadStore(heads, self._engine.base_head)
            self._pointer_stamp, self._head_stamp = stamp, None
        head_stamp = self._store.stamp()
        if head_stamp != self._head_stamp:
            self._version = self._store.current_version()
            self._head = self._store.load(self._version)
            self._head_stamp = head_stamp
