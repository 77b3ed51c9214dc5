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
from autohas_edge.device_sdk.classes import (
    MIN_RECALL,
    Growth,
    check_class_name,
    check_example_count,
    grow_head,
)
from autohas_edge.device_sdk.engine import Engine
from autohas_edge.device_sdk.errors import InvalidInputError, SDKError
from autohas_edge.device_sdk.finetune import (
    Head,
    HeadHyperparameters,
    InputAlignment,
    holdout_split,
    improves,
    softmax,
    train_head,
)
from autohas_edge.device_sdk.heads import HeadStore, UserClasses
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


@dataclass(frozen=True)
class AddClassResult:
    """The outcome of `Model.add_class`: whether the grown head was kept, and its held-out check."""

    accepted: bool
    name: str  # the class name as stored (spaces stripped)
    class_index: int  # the class id it has (or would have had): the head's row count before
    version: int  # the personalised version in use afterwards
    previous_version: int  # the version holding the head used before: `reset(previous_version)`
    made_own: bool  # the app was moved from the shared model to its own copy of it
    method: str  # "imprint" or "imprint+fine-tune" (see `device_sdk.classes`)
    heldout_recall: float  # share of the new class's held-out examples predicted as it
    heldout_old_accuracy_before: float | None  # held-out examples of the other classes, head before
    heldout_old_accuracy_after: float | None  # the same, grown head (None: no such examples)
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
        """Class names of the head in use, index = class id (the bundle's, then any added ones)."""
        with self._lock:
            self._sync()
            return self._label_names()

    @property
    def num_classes(self) -> int:
        """Number of classes of the head in use (the bundle's plus any added with `add_class`)."""
        return len(self.label_names)

    @property
    def added_classes(self) -> tuple[str, ...]:
        """Names of the classes added on the device (`add_class`) in the head in use."""
        return self.label_names[self.manifest.num_classes :]

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
        out = head.logits(engine.embed(head.align(batch)))
        return out[0] if single else out

    def predict_label(self, x: Any) -> str | list[str]:
        """Name of the top class: one name for one example, a list of names for a batch."""
        batch, single = as_examples(x, self.input_shape)
        with self._lock:
            self._sync()
            engine, head, names = self._engine, self._head, self._label_names()
        names_out = [names[i] for i in head.logits(engine.embed(head.align(batch))).argmax(1)]
        return names_out[0] if single else names_out

    def embed(self, x: Any) -> np.ndarray:
        """Feature vectors from the exported feature extractor: `[D]` or `[n, D]`.

        Of the examples as given: a head fine-tuned with trainable "input+head" sees them aligned.
        """
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
        one by a margin a one-sided sign test over the examples the two heads disagree on accepts
        (`finetune.improves`: 3 more right when none is lost).
        `hyperparameters` override the manifest's `fine_tuning.hyperparameters`; their
        `trainable` says what is personalised: "head", or "input+head" (a per-channel input
        affine fitted to the training part of the examples, `finetune.InputAlignment`, then the
        head on the aligned examples; "head" where the bundle has no `input_statistics`). A head with
        classes added by `add_class` also trains on (and checks with) their stored examples, so that
        a fine-tune on the other classes does not make it forget them.
        """
        start = time.perf_counter()
        batch, _ = as_examples(x, self.input_shape)
        labels = as_labels(y, len(batch), self.num_classes)
        hp = self._hyperparameters(hyperparameters)
        with self._lock:
            self._sync()
            batch, labels = self._with_stored(batch, labels)
            train, held = holdout_split(labels, holdout, seed)
            previous, current = self._version, self._head
            features = self._engine.embed(current.align(batch))
            initial = self._start_head(current, batch[train], hp)
            tuned = features if initial is current else self._engine.embed(initial.align(batch))
            trained, losses = train_head(
                initial, tuned[train], labels[train], hp, seed, self._engine.trainer
            )
            before_right = current.correct(features[held], labels[held])
            diverged = not trained.finite() or not np.isfinite(losses[-1])
            after_right = trained.correct(tuned[held], labels[held]) & (not diverged)
            before = float(before_right.mean())
            after = -1.0 if diverged else float(after_right.mean())
            accepted = improves(before_right, after_right)
            meta = _check_meta(before, after, len(train), len(held))
            version = self._save(trained, hp, meta, self._classes) if accepted else previous
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

    def add_class(
        self,
        name: str,
        examples: Any,
        *,
        known_x: Any = None,
        known_y: Any = None,
        share: bool = False,
        holdout: float = 0.25,
        seed: int = 0,
        min_recall: float = MIN_RECALL,
        hyperparameters: Mapping[str, Any] | None = None,
    ) -> AddClassResult:
        """Add a class named `name` from `examples` of it (`[n, *input_shape]`, n >= 5; 10-20 is better).

        The head grows by one output, class id `num_classes`, named `name` in `label_names`: its row
        is imprinted from the examples' mean normalised feature, then fine-tuned together with
        `known_x`/`known_y` (the app's examples of the existing classes, optional but recommended:
        they guard and improve the old classes) and the stored examples of classes added before
        (`device_sdk.classes`). `holdout` of the examples (stratified) decides: the grown head is
        kept, as a new version, only if it predicts the new class for at least `min_recall` of its
        held-out examples and classifies the held-out examples of the other classes (if any) at
        least as well as the head in use; otherwise nothing changes (`accepted` is False).

        Other apps do not see the class: an app using the task's shared model is first moved to its
        own copy of it (as `Hub.model(..., private=True)` does, starting from the head it uses), so
        from then on its fine-tunes stay its own too. `share=True` adds the class to the shared
        model instead, for every app using it. The examples are kept with the head (the new
        version's file) and reused by later `fine_tune`/`add_class` calls; `reset` and older
        versions give the head without the class. Bad input raises `InvalidInputError` and
        changes nothing.
        """
        start = time.perf_counter()
        with self._lock:
            self._sync()
            clean = check_class_name(name, self._label_names())
            batch, _ = as_examples(examples, self.input_shape, "examples")
            check_example_count(len(batch), clean)
            known = self._known_examples(known_x, known_y)
            _check_choice(share, self.shared, self.app_id, min_recall)
            hp = self._hyperparameters(hyperparameters)
            previous, engine = self._version, self._engine
            growth = grow_head(
                self._head,
                engine.embed(self._head.align(batch)),
                self._embed_rows(known[0]),
                known[1],
                hp,
                holdout=holdout,
                seed=seed,
                min_recall=min_recall,
                trainer=engine.trainer,
            )
            made_own, version = False, previous
            if growth.accepted:
                made_own = not share and self.shared
                previous, version = self._keep_class(clean, batch, growth, hp, made_own)
        return _added(growth, clean, (previous, version), made_own, time.perf_counter() - start)

    def reset(self, version: int = 0) -> None:
        """Go back to the downloaded head (version 0) or to an earlier personalised version."""
        with self._lock, self._models.exclusive():
            self._store.activate(version)
            self._sync()

    # -- personalisation: helpers -------------------------------------------------------------------

    def _hyperparameters(self, overrides: Mapping[str, Any] | None) -> HeadHyperparameters:
        return HeadHyperparameters.from_mapping(
            {**self.manifest.fine_tuning.hyperparameters, **(overrides or {})}
        )

    def _label_names(self) -> tuple[str, ...]:
        return self._classes.labels if self._classes is not None else self.manifest.label_names

    def _with_stored(self, batch: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`batch`/`labels` followed by the stored examples of the added classes (if any)."""
        if self._classes is None or len(self._classes.y) == 0:
            return batch, labels
        return np.concatenate([batch, self._classes.x]), np.concatenate([labels, self._classes.y])

    def _known_examples(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """The app's examples of the existing classes (validated) and the stored added-class ones."""
        if (x is None) != (y is None):
            raise InvalidInputError("give known_x and known_y together (examples and their labels)")
        batch = np.zeros((0, *self.input_shape), np.float32)
        labels = np.zeros(0, np.int64)
        if x is not None:
            batch, _ = as_examples(x, self.input_shape, "known_x")
            labels = as_labels(y, len(batch), len(self._label_names()))
        return self._with_stored(batch, labels)

    def _embed_rows(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.manifest.fine_tuning.feature_dim), np.float32)
        return self._engine.embed(self._head.align(batch))

    def _start_head(self, current: Head, x: np.ndarray, hp: HeadHyperparameters) -> Head:
        """The head a fine-tune starts from: `current`, with a new input alignment fitted to `x`
        when `hp.trainable` is "input+head" and the bundle has the training data's statistics."""
        stats = self._engine.input_statistics
        if hp.trainable != "input+head" or stats is None:
            return current
        return Head(current.weight, current.bias, InputAlignment.fit(x, stats))

    def _keep_class(
        self, name: str, batch: np.ndarray, growth: Growth, hp: HeadHyperparameters, own: bool
    ) -> tuple[int, int]:
        """Save the grown head with its names and examples (first the app's own copy if `own`).

        Returns the version holding the head used before (in the app's own store when `own`) and
        the new version.
        """
        index = growth.head.weight.shape[0] - 1
        ids = np.full(len(batch), index, np.int64)
        old = self._classes
        classes = UserClasses(
            (*self._label_names(), name),
            batch if old is None else np.concatenate([old.x, batch]),
            ids if old is None else np.concatenate([old.y, ids]),
        )
        meta = {
            "added_class": name,
            "method": growth.method,
            "heldout_recall": growth.heldout_recall,
            "heldout_old_accuracy_before": growth.heldout_old_before,
            "heldout_old_accuracy_after": growth.heldout_old_after,
            "train_examples": growth.train_examples,
            "heldout_examples": growth.heldout_examples,
        }
        with self._models.exclusive():
            previous = self._make_own() if own else self._version
            return previous, self._save(growth.head, hp, meta, classes)

    def _save(
        self, head: Head, hp: HeadHyperparameters, meta: dict[str, Any], classes: UserClasses | None
    ) -> int:
        meta = {
            "app_id": self.app_id,
            "format": self.format,
            **meta,
            "hyperparameters": hp.__dict__,
            "saved_at": time.time(),
        }
        with self._models.exclusive():
            version = self._store.save(head, meta, classes)
        self._sync()
        return version

    def _make_own(self) -> int:
        """Move this app from the shared model to its own copy, at the head it uses (in `exclusive`).

        Returns the own version that holds that head (0, or a copy of the shared version).
        """
        pointer = self._models.read_pointer(self.task_id, None)
        if pointer["model_id"] != self._model_id:
            raise SDKError(
                f"task {self.task_id!r} got a new model ({pointer['model_id']}) while the class was "
                f"being added; nothing was changed: add it again"
            )
        heads = self._models.heads_dir(self.task_id, self.app_id, self._model_id)
        own = HeadStore(heads, self._engine.base_head)
        version = 0
        if self._version == 0:
            own.activate(0)
        else:
            meta = {"app_id": self.app_id, "copied_from_shared_version": self._version}
            version = own.save(self._head, {**meta, "saved_at": time.time()}, self._classes)
        self._models.write_pointer(self.task_id, self.app_id, pointer)
        self._owner, self._pointer_stamp = self.app_id, None
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
            self._classes = self._store.classes(self._version)
            self._head_stamp = head_stamp


def _added(
    growth: Growth, name: str, versions: tuple[int, int], made_own: bool, seconds: float
) -> AddClassResult:
    return AddClassResult(
        accepted=growth.accepted,
        name=name,
        class_index=growth.head.weight.shape[0] - 1,
        version=versions[1],
        previous_version=versions[0],
        made_own=made_own,
        method=growth.method,
        heldout_recall=growth.heldout_recall,
        heldout_old_accuracy_before=growth.heldout_old_before,
        heldout_old_accuracy_after=growth.heldout_old_after,
        train_examples=growth.train_examples,
        heldout_examples=growth.heldout_examples,
        seconds=seconds,
        losses=growth.losses,
    )


def _check_meta(before: float, after: float, n: int, m: int) -> dict[str, Any]:
    return {
        "heldout_accuracy_before": before,
        "heldout_accuracy_after": after,
        "train_examples": n,
        "heldout_examples": m,
    }


def _check_choice(share: bool, shared: bool, app_id: str, min_recall: float) -> None:
    if share and not shared:
        raise InvalidInputError(
            f"share=True adds the class to the task's shared model, but app {app_id!r} uses its "
            f"own model: add it without share=True"
        )
    if not 0.0 <= min_recall <= 1.0:
        raise InvalidInputError(f"min_recall must be in [0, 1], got {min_recall}")
