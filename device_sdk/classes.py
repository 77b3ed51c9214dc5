"""User-defined classes: grow a head by one class from a few examples, in numpy (no torch).

`grow_head` is the algorithm behind `Model.add_class`:

1. the examples of the new class and the examples of the head's classes the app has (its own
   `known_x`/`known_y` and the stored examples of classes added before) form one pool, split into
   train and held-out parts (stratified, as `fine_tune` splits);
2. imprinting: the new row is the direction of the mean L2-normalised feature of the new class's
   training examples, scaled to the mean norm of the existing rows; its bias is their mean bias;
3. fine-tuning of the imprinted head with the search's hyper-parameters, when the training part
   holds examples of any other class: every row whose class has training examples trains, the rest
   stay as they were (a head of a new size has no train-step graph: `TrainStepGraph.start` returns
   None and the numpy reference runs). With only the new class's examples there is nothing to train
   against (every step would only raise the new class everywhere): the imprinted head is the only
   candidate;
4. the held-out check: a candidate passes if it predicts the new class for at least `min_recall` of
   the new class's held-out examples and classifies the held-out examples of the other classes (when
   there are any) at least as well as the head in use. The best passing candidate (new-class recall
   plus old-class accuracy; imprinting on a tie) is kept; when none passes, nothing is.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autohas_edge.device_sdk.errors import InvalidInputError
from autohas_edge.device_sdk.finetune import (
    Head,
    HeadHyperparameters,
    HeadTrainer,
    StepFunction,
    holdout_split,
    numpy_step,
    train_head,
)

#: the fewest examples `add_class` accepts for a new class
MIN_EXAMPLES = 5
#: default share of the new class's held-out examples the grown head must predict as that class
MIN_RECALL = 0.5
#: the longest class name
MAX_NAME_LENGTH = 64


@dataclass(frozen=True)
class Growth:
    """What `grow_head` made: the grown head and how it fared on the held-out examples."""

    head: Head  # [C + 1, D]: the old rows (trained or not) and the new class's row last
    accepted: bool  # it passed the held-out check
    method: str  # "imprint" or "imprint+fine-tune": the candidate chosen
    losses: tuple[float, ...]  # per epoch, of the fine-tuned candidate (empty when none)
    train_examples: int
    heldout_examples: int
    heldout_recall: float  # share of the new class's held-out examples predicted as it (-1: NaN)
    heldout_old_before: float | None  # the head in use, held-out examples of the other classes
    heldout_old_after: float | None  # the grown head on them (None: there were none)


@dataclass(frozen=True)
class _Check:
    """One candidate head on the held-out examples."""

    head: Head
    method: str
    recall: float
    old: float | None

    def score(self) -> float:
        return self.recall + (self.old or 0.0)


def check_class_name(name: object, existing: Sequence[str]) -> str:
    """`name` stripped; InvalidInputError when empty, too long, not text or already a class."""
    if not isinstance(name, str):
        raise InvalidInputError(f"a class name must be a string, got {type(name).__name__}")
    clean = name.strip()
    if not clean or len(clean) > MAX_NAME_LENGTH:
        raise InvalidInputError(
            f"class name {name!r} must have 1 to {MAX_NAME_LENGTH} characters (spaces stripped)"
        )
    if any(unicodedata.category(ch).startswith("C") for ch in clean):
        raise InvalidInputError(f"class name {name!r} contains control characters")
    taken = {_key(label): label for label in existing}
    if _key(clean) in taken:
        raise InvalidInputError(
            f"the model already has a class named {taken[_key(clean)]!r}: "
            f"class names must be unique (case and spacing ignored)"
        )
    return clean


def _key(name: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def check_example_count(n: int, name: str) -> None:
    """InvalidInputError when `n` examples are too few to add a class."""
    if n < MIN_EXAMPLES:
        raise InvalidInputError(
            f"adding class {name!r} needs at least {MIN_EXAMPLES} examples of it, got {n}"
        )


def imprint(head: Head, features: np.ndarray) -> Head:
    """`head` with one more row: the mean normalised feature's direction, at the rows' mean norm."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise InvalidInputError(
            "some examples of the new class have all-zero features: the model cannot tell them apart"
        )
    direction = (features / norms).mean(axis=0)
    length = float(np.linalg.norm(direction))
    if not length > 0:
        raise InvalidInputError("the new class's examples point in opposite directions")
    scale = float(np.linalg.norm(head.weight, axis=1).mean())
    row = (direction / length * scale).astype(np.float32)
    weight = np.vstack([head.weight, row[None]]).astype(np.float32)
    bias = np.append(head.bias, np.float32(head.bias.mean())).astype(np.float32)
    return Head(weight, bias, head.alignment)


class FrozenRows:
    """A `finetune.HeadTrainer` (numpy) that leaves the given rows of the head as they were."""

    def __init__(self, rows: Sequence[int]) -> None:
        self.rows = np.asarray(sorted(rows), dtype=np.int64)

    def start(self, hp: HeadHyperparameters, head: Head) -> StepFunction:
        """The numpy reference step, then the frozen rows put back (weight decay included)."""
        step, rows = numpy_step(hp, head), self.rows
        weight, bias = head.weight[rows].copy(), head.bias[rows].copy()

        def frozen_step(features: np.ndarray, labels: np.ndarray) -> float:
            loss = step(features, labels)
            head.weight[rows], head.bias[rows] = weight, bias
            return loss

        return frozen_step


def grow_head(
    head: Head,
    new_features: np.ndarray,
    known_features: np.ndarray,
    known_labels: np.ndarray,
    hp: HeadHyperparameters,
    *,
    holdout: float = 0.25,
    seed: int = 0,
    min_recall: float = MIN_RECALL,
    trainer: HeadTrainer | None = None,
) -> Growth:
    """Add class `C` (the head's row count) from `new_features` [n, D]; see the module docstring.

    `known_features` [m, D] / `known_labels` [m] (m may be 0) are examples of the head's classes;
    `trainer` runs the steps when every row trains (a bundle's graph; numpy when it cannot).
    """
    c = head.weight.shape[0]
    features = np.concatenate([new_features, known_features]).astype(np.float32)
    labels = np.concatenate([np.full(len(new_features), c), known_labels]).astype(np.int64)
    train, held = holdout_split(labels, holdout, seed)
    imprinted = imprint(head, features[train][labels[train] == c])
    candidates = [_check(imprinted, "imprint", features[held], labels[held], c)]
    losses: list[float] = []
    present = set(np.unique(labels[train]).tolist())
    if len(present) > 1:
        frozen = [row for row in range(c) if row not in present]
        runner = FrozenRows(frozen) if frozen else trainer
        tuned, losses = train_head(imprinted, features[train], labels[train], hp, seed, runner)
        if tuned.finite() and np.isfinite(losses[-1]):
            candidates.append(_check(tuned, "imprint+fine-tune", features[held], labels[held], c))
    old = labels[held] < c
    before = head.accuracy(features[held][old], labels[held][old]) if old.any() else None
    passing = [k for k in candidates if _passes(k, before, min_recall)]
    best = max(passing or candidates, key=_Check.score)  # the first of equals: imprint
    return Growth(
        head=best.head,
        accepted=bool(passing),
        method=best.method,
        losses=tuple(losses),
        train_examples=len(train),
        heldout_examples=len(held),
        heldout_recall=best.recall,
        heldout_old_before=before,
        heldout_old_after=best.old,
    )


def _check(head: Head, method: str, features: np.ndarray, labels: np.ndarray, c: int) -> _Check:
    """`head` on the held-out examples: the new class's recall, the other classes' accuracy."""
    predicted = head.logits(features).argmax(1)
    new, old = labels == c, labels < c
    recall = float(np.mean(predicted[new] == c)) if head.finite() else -1.0
    accuracy = float(np.mean(predicted[old] == labels[old])) if old.any() else None
    return _Check(head, method, recall, accuracy)


def _passes(check: _Check, before: float | None, min_recall: float) -> bool:
    """Enough of the new class recognised, and the other classes no worse than before."""
    no_worse = before is None or (check.old is not None and check.old >= before)
    return check.head.finite() and check.recall >= min_recall and no_worse
