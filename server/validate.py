"""Checks of request values; each failure names the offending field."""

from __future__ import annotations

import math

import numpy as np

from autohas_edge.common.ids import ID_RULE, is_id
from autohas_edge.common.tensor import DTYPES
from autohas_edge.server.domain import SEARCH_MODES, ExampleBatch, JobSpec, Task
from autohas_edge.server.errors import InvalidArgument

MAX_TEXT = 256
MAX_STEPS = 10_000_000
MAX_CLASSES = 100_000
MAX_INPUT_ELEMENTS = 2**24
#: a task's layout -> the rank of its input_shape
RANKS = {"tabular": 1, "signal": 2, "image": 3}
MAX_CHANNELS = 64  # signals [C, L] and images [C, H, W]: e.g. a 3-axis accelerometer, RGB
MAX_SEED = 2**63 - 1  # the search seeds numpy's generator, which refuses negative seeds
MAX_LATENCY_MS = 1e6
MAX_COHORT = 1_000_000


def check_id(field: str, value: str) -> str:
    """A required identifier: 1-128 characters of letters, digits and `._:@+=/-`, not starting with one."""
    if not value:
        raise InvalidArgument(field, "required")
    if not is_id(value):
        raise InvalidArgument(field, f"{value[:64]!r} is not {ID_RULE}")
    return value


def check_text(field: str, value: str) -> str:
    """Optional free text: at most 256 characters, no control characters."""
    if len(value) > MAX_TEXT or any(ord(ch) < 32 for ch in value):
        raise InvalidArgument(field, f"at most {MAX_TEXT} characters, no control characters")
    return value


def check_task(task: Task) -> Task:
    """A task an operator may create: ids well formed, shape of rank 1-3, labels consistent."""
    check_id("task.task_id", task.task_id)
    if not task.app_ids:
        raise InvalidArgument("task.app_ids", "at least one app id is required")
    for i, app_id in enumerate(task.app_ids):
        check_id(f"task.app_ids[{i}]", app_id)
    check_id("task.purpose", task.purpose)
    shape = task.input_shape
    if (
        not 1 <= len(shape) <= 3
        or any(d < 1 for d in shape)
        or math.prod(shape) > MAX_INPUT_ELEMENTS
    ):
        raise InvalidArgument(
            "task.input_shape",
            f"{list(shape)} is not [F], [C, L] or [C, H, W] with "
            f"positive sizes, at most {MAX_INPUT_ELEMENTS} elements",
        )
    if len(shape) > 1 and shape[0] > MAX_CHANNELS:
        raise InvalidArgument(
            "task.input_shape",
            f"{list(shape)}: signals and images have their channels first, at most "
            f"{MAX_CHANNELS} (channels-last data: move the channel axis to the front)",
        )
    if task.layout and RANKS.get(task.layout) != len(shape):
        raise InvalidArgument(
            "task.layout",
            f"{task.layout!r} with input_shape {list(shape)}: expected tabular [F], signal [C, L] "
            "or image [C, H, W], channels first (a one-channel signal of length L is [1, L])",
        )
    if task.input_dtype not in DTYPES:
        raise InvalidArgument("task.input_dtype", "required (one of " + ", ".join(DTYPES) + ")")
    if not 2 <= task.num_classes <= MAX_CLASSES:
        raise InvalidArgument(
            "task.num_classes", f"{task.num_classes} is not in [2, {MAX_CLASSES}]"
        )
    if task.label_names and len(task.label_names) != task.num_classes:
        raise InvalidArgument(
            "task.label_names", f"{len(task.label_names)} names for {task.num_classes} classes"
        )
    for i, name in enumerate(task.label_names):
        check_text(f"task.label_names[{i}]", name)
    if not 0 <= task.min_users <= MAX_COHORT:
        raise InvalidArgument("task.min_users", f"{task.min_users} is not in [0, {MAX_COHORT}]")
    return task


def check_batch(batch: ExampleBatch, task: Task, max_examples: int) -> None:
    """An uploaded batch matches its task: dtype, shape, finite values, one in-range label per example."""
    check_id("batch_id", batch.batch_id)
    x, y = batch.features, batch.labels
    if x.dtype != DTYPES[task.input_dtype]:
        raise InvalidArgument("features.dtype", f"expected {task.input_dtype}, got {x.dtype}")
    expected = f"[n, {', '.join(map(str, task.input_shape))}]"
    if x.ndim == 0 or tuple(x.shape[1:]) != task.input_shape:
        raise InvalidArgument("features.shape", f"expected {expected}, got {list(x.shape)}")
    n = x.shape[0]
    if n == 0:
        raise InvalidArgument("features.shape", f"empty batch: {list(x.shape)} has no examples")
    if n > max_examples:
        raise InvalidArgument(
            "features.shape", f"{n} examples exceed the limit of {max_examples} a batch"
        )
    if y.shape != (n,):
        raise InvalidArgument("labels", f"expected {n} labels (one per example), got {y.size}")
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(x.reshape(n, -1)).all(axis=1)
        if not finite.all():
            raise InvalidArgument(
                "features.data", f"example {int(np.argmin(finite))} contains NaN or inf"
            )
    bad = (y < 0) | (y >= task.num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidArgument(f"labels[{i}]", f"{int(y[i])} is outside [0, {task.num_classes})")


def check_spec(spec: JobSpec) -> JobSpec:
    """A job spec's own ranges (the engine checks the rest when the job is built)."""
    check_id("spec.task_id", spec.task_id)
    if spec.mode not in SEARCH_MODES:
        raise InvalidArgument("spec.mode", f"{spec.mode!r} is not one of {', '.join(SEARCH_MODES)}")
    if spec.strategy:
        check_id("spec.strategy", spec.strategy)
    for name, top in (
        ("steps", MAX_STEPS),
        ("retrain_steps", MAX_STEPS),
        ("max_params", 2**62),
        ("max_flops", 2**62),
        ("seed", MAX_SEED),
    ):
        if not 0 <= getattr(spec, name) <= top:
            raise InvalidArgument(f"spec.{name}", f"{getattr(spec, name)} is not in [0, {top}]")
    if not (math.isfinite(spec.max_latency_ms) and 0.0 <= spec.max_latency_ms <= MAX_LATENCY_MS):
        raise InvalidArgument(
            "spec.max_latency_ms", f"{spec.max_latency_ms} is not in [0, {MAX_LATENCY_MS:g}]"
        )
    if not (math.isfinite(spec.within_points) and 0.0 <= spec.within_points <= 100.0):
        raise InvalidArgument(
            "spec.within_points", f"{spec.within_points} accuracy points is not in [0, 100]"
        )
    for name in ("validation_fraction", "test_fraction"):
        value = getattr(spec, name)
        if not (math.isfinite(value) and 0.0 <= value < 1.0):
            raise InvalidArgument(f"spec.{name}", f"{value} is not in [0, 1)")
    if spec.validation_fraction + spec.test_fraction >= 1.0:
        raise InvalidArgument(
            "spec.test_fraction", "validation_fraction + test_fraction must be below 1"
        )
    return spec
