"""Labels and sizes a search can learn from: classes 0..K-1 (other values remapped, with their names
kept), at least two classes, enough examples of each, a test split large enough to mean something."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: every class needs this many training examples (validation included), as a fine-tune's held-out
#: check and a stratified look need a few of each
MIN_PER_CLASS = 5
#: below this a test accuracy moves in steps of more than 10 points
MIN_TEST_EXAMPLES = 10


@dataclass(frozen=True)
class Labels:
    """Labels as class indices 0..K-1, the class names, and a note when values were remapped."""

    y: np.ndarray
    y_test: np.ndarray
    names: list[str]
    note: str = ""


def _values(values: np.ndarray) -> str:
    shown = ", ".join(str(v) for v in values[:8].tolist())
    return shown + (f", ... ({len(values)} values)" if len(values) > 8 else "")


def check_label_array(y: np.ndarray, name: str) -> None:
    """Integer labels, none negative (ValueError naming the first bad value)."""
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer labels (class numbers), got {y.dtype}")
    if len(y) and y.min() < 0:
        raise ValueError(
            f"{name} holds the negative label {int(y.min())}: labels are class numbers 0..K-1 "
            "(drop unlabelled examples rather than marking them -1)"
        )


def class_labels(
    y: np.ndarray, y_test: np.ndarray, names: list[str], num_classes: int = 0
) -> Labels:
    """`y` and `y_test` as 0..K-1. With `num_classes` the classes are fixed (a server task): labels
    must lie below it. Otherwise label values that are not 0..K-1 are remapped in sorted order and
    named by their value (or by `names[value]` when `names` covers them)."""
    if num_classes:
        top = int(max(y.max(), y_test.max() if len(y_test) else 0))
        if top >= num_classes:
            raise ValueError(f"label {top} is not below the task's {num_classes} classes")
        return Labels(y, y_test, names or [str(i) for i in range(num_classes)])
    values = np.unique(np.concatenate([y, y_test]))
    if len(values) < 2:
        raise ValueError(f"all labels are {int(values[0])}: a classifier needs at least 2 classes")
    if np.array_equal(values, np.arange(len(values))):
        if names and len(names) < len(values):
            raise ValueError(f"{len(names)} label_names for {len(values)} classes")
        return Labels(y, y_test, names or [str(v) for v in values.tolist()])
    if names and len(names) == len(values):
        new_names = list(names)  # they name the classes in sorted order of their values
    elif names and len(names) > int(values[-1]):
        new_names = [names[v] for v in values.tolist()]
    elif names:
        raise ValueError(
            f"{len(names)} label_names for the label values {_values(values)}: give one name "
            "per class or one per value 0..max"
        )
    else:
        new_names = [str(v) for v in values.tolist()]
    remap = {int(v): i for i, v in enumerate(values.tolist())}
    mapped = [np.array([remap[int(v)] for v in a], np.int64) for a in (y, y_test)]
    note = (
        f"labels {_values(values)} remapped to classes 0..{len(values) - 1} (result.json's "
        "label_names keep the original values)"
    )
    return Labels(mapped[0], mapped[1], new_names, note)


def check_sizes(y_train: np.ndarray, num_classes: int, n_test: int, names: list[str]) -> None:
    """At least `MIN_PER_CLASS` training examples of every class and `MIN_TEST_EXAMPLES` test ones."""
    counts = np.bincount(y_train, minlength=num_classes)
    scarce = [i for i in range(num_classes) if counts[i] < MIN_PER_CLASS]
    if scarce:
        shown = ", ".join(f"{names[i]!r}: {counts[i]}" for i in scarce[:5])
        raise ValueError(
            f"too few training examples of {len(scarce)} class{'es' if len(scarce) > 1 else ''} "
            f"({shown}; need at least {MIN_PER_CLASS} each)"
        )
    if n_test < MIN_TEST_EXAMPLES:
        raise ValueError(
            f"the test split has {n_test} example{'s' if n_test != 1 else ''} (need at least "
            f"{MIN_TEST_EXAMPLES}: add data or an x_test / y_test of {MIN_TEST_EXAMPLES} or more)"
        )
