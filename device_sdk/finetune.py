"""Train a linear classification head on extracted features, in numpy (no torch on the device).

What a fine-tune personalises (`HeadHyperparameters.trainable`, named in the manifest's
`fine_tuning.hyperparameters`): "head", the linear head alone, or "input+head", a per-channel affine
on the raw input (`InputAlignment`, fitted to the user's examples in closed form: it maps their
per-channel mean and standard deviation onto the training data's, undoing a sensor's gain and
offset before the feature extractor) and then the head, trained on the aligned examples' features.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from autohas_edge.device_sdk.errors import BundleError, InvalidInputError

#: The update conventions of the search engine (server/search/hparams.py, derive.fine_tuning), so that
#: the manifest's hyper-parameters mean the same here: `learning_rate` is the optimizer's effective rate,
#: weight decay is decoupled (each step is `w -= lr * d + lr * weight_decay * w`), "sgd" has momentum 0.9.
OPTIMIZERS = ("sgd", "adam", "rmsprop")
MOMENTUM = 0.9
ADAM_BETAS = (0.9, 0.999)
RMSPROP_ALPHA = 0.99
EPS = 1e-8
#: bounds on the sizes a manifest (or an app) may ask for: a head trains in seconds, so `epochs=1e12`
#: from a hostile manifest is refused rather than run forever (rates only need to be finite: a
#: diverging head is rolled back)
MAX_EPOCHS = 1000
MAX_BATCH_SIZE = 1 << 16
#: what a fine-tune personalises; a bundle's manifest names one (bundles before it: "head")
TRAINABLE = ("head", "input+head")
#: what export writes into new bundles' manifests, picked by measurement (bench/RESULTS.md,
#: "device SDK: input alignment")
DEFAULT_TRAINABLE = "input+head"
#: a user's channel whose spread is below this share of the training data's is only shifted
MIN_SPREAD = 1e-3
#: a fine-tune is kept only when its net gain on the held-out examples (right now, wrong before,
#: minus the other way) is at least this many standard deviations of the net gain two equally good
#: heads would show on the examples they disagree on (the square root of their number): a one-sided
#: sign test at 95%. With none lost that asks 3 more right; 5 gained and 3 lost is not enough (a
#: fine-tune kept on +2 of 30 lost 4 of a demo user's 80 evaluation examples)
SIGN_TEST_Z = 1.645


@dataclass(frozen=True)
class HeadHyperparameters:
    """Fine-tuning hyper-parameters, as the search chose them (manifest `fine_tuning.hyperparameters`)."""

    learning_rate: float = 0.01
    weight_decay: float = 0.0
    epochs: int = 20
    batch_size: int = 32
    label_smoothing: float = 0.0
    optimizer: str = "sgd"
    trainable: str = "head"  # one of TRAINABLE

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise InvalidInputError(f"optimizer {self.optimizer!r} is not one of {OPTIMIZERS}")
        _check_range("epochs", self.epochs, 1, MAX_EPOCHS)
        _check_range("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        if not self.learning_rate > 0.0:
            raise InvalidInputError(f"learning_rate {self.learning_rate!r} is not positive")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise InvalidInputError(f"label_smoothing {self.label_smoothing!r} is not in [0, 1)")
        if not self.weight_decay >= 0.0:
            raise InvalidInputError(f"weight_decay {self.weight_decay!r} is negative")
        if self.trainable not in TRAINABLE:
            raise InvalidInputError(f"trainable {self.trainable!r} is not one of {TRAINABLE}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> HeadHyperparameters:
        """Build from the manifest's mapping, ignoring keys this trainer does not use;
        InvalidInputError naming a value of the wrong type or out of bounds."""
        known = {k: values[k] for k in cls.__dataclass_fields__ if k in values}
        if "optimizer" in known:
            known["optimizer"] = _optimizer_name(str(known["optimizer"]))
        for key in ("epochs", "batch_size"):
            if key in known:
                known[key] = _integer(key, known[key])
        for key in ("learning_rate", "weight_decay", "label_smoothing"):
            if key in known:
                known[key] = _real(key, known[key])
        if "trainable" in known:
            known["trainable"] = str(known["trainable"])
        return cls(**known)


def _integer(name: str, value: Any) -> int:
    """An integral number (an int, or a float such as 20.0) as an int; not a bool or a string."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInputError(f"{name} {value!r} is not a number")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise InvalidInputError(f"{name} {value!r} is not a whole number")
    return int(value)


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"{name} {value!r} is not a finite number")
    return float(value)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidInputError(f"{name} {value!r} is not in [{low}, {high}]")


def _optimizer_name(name: str) -> str:
    lowered = name.lower().replace("-", "").replace("_", "")
    aliases = {"sgdm": "sgd", "sgdmomentum": "sgd", "momentum": "sgd", "adamw": "adam"}
    return aliases.get(lowered, lowered)


@dataclass(frozen=True)
class InputStatistics:
    """The training data's per-channel mean and standard deviation (manifest `input_statistics`)."""

    mean: np.ndarray  # [channels] float64 (signals, images: the first axis; tabular: each feature)
    std: np.ndarray

    @classmethod
    def from_manifest(cls, value: Any, channels: int) -> InputStatistics | None:
        """Parse `fine_tuning.input_statistics`; None when absent; BundleError when malformed."""
        if value is None:
            return None
        try:
            mean = np.asarray(value["mean"], dtype=np.float64)
            std = np.asarray(value["std"], dtype=np.float64)
        except (TypeError, KeyError, ValueError) as err:
            raise BundleError(f"fine_tuning.input_statistics is malformed: {err}") from err
        ok = mean.shape == std.shape == (channels,) and np.all(np.isfinite(mean))
        if not (ok and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise BundleError(
                f"fine_tuning.input_statistics needs {channels} finite means and positive "
                f"standard deviations, got {mean.shape} / {std.shape}"
            )
        return cls(mean, std)


@dataclass(frozen=True)
class InputAlignment:
    """A per-channel affine on raw examples `[n, C, ...]`: `x * scale + shift` (channel axis 1)."""

    scale: np.ndarray  # [C] float32
    shift: np.ndarray  # [C] float32

    @classmethod
    def fit(cls, x: np.ndarray, stats: InputStatistics) -> InputAlignment:
        """The affine mapping the per-channel mean and spread of `x` onto `stats`' (closed form).

        A channel whose spread is below `MIN_SPREAD` of the training data's is only shifted.
        """
        axes = (0, *range(2, x.ndim))
        mean = x.mean(axis=axes, dtype=np.float64)
        spread = x.std(axis=axes, dtype=np.float64)
        flat = spread < MIN_SPREAD * stats.std
        scale = np.where(flat, 1.0, stats.std / np.where(flat, 1.0, spread))
        shift = stats.mean - mean * scale
        return cls(scale.astype(np.float32), shift.astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The aligned examples, float32, the shape of `x`."""
        shape = (1, -1) + (1,) * (x.ndim - 2)
        aligned = x * self.scale.reshape(shape) + self.shift.reshape(shape)
        return np.ascontiguousarray(aligned, dtype=np.float32)


@dataclass
class Head:
    """A linear classifier `logits = features @ weight.T + bias`.

    `alignment`, when set, is the input affine the features must come from (`Head.align`).
    """

    weight: np.ndarray  # [C, D] float32
    bias: np.ndarray  # [C] float32
    alignment: InputAlignment | None = None

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Class scores for `[n, D]` features."""
        logits: np.ndarray = features @ self.weight.T + self.bias
        return logits

    def align(self, x: np.ndarray) -> np.ndarray:
        """Raw examples as this head's feature extractor input (aligned when it has an alignment)."""
        return self.alignment.apply(x) if self.alignment is not None else x

    def correct(self, features: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per row: whether its top class is the label."""
        right: np.ndarray = self.logits(features).argmax(1) == labels
        return right

    def accuracy(self, features: np.ndarray, labels: np.ndarray) -> float:
        """Share of rows whose top class is the label."""
        return float(np.mean(self.correct(features, labels))) if len(labels) else 0.0

    def finite(self) -> bool:
        """False when training diverged (NaN or infinite weights)."""
        return bool(np.all(np.isfinite(self.weight)) and np.all(np.isfinite(self.bias)))

    def copy(self) -> Head:
        """An independent copy (the alignment is immutable and shared)."""
        return Head(self.weight.copy(), self.bias.copy(), self.alignment)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return probs


def loss_and_grads(
    head: Head, features: np.ndarray, labels: np.ndarray, smoothing: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean label-smoothed cross-entropy and its gradients w.r.t. weight and bias."""
    n, c = len(labels), head.weight.shape[0]
    target = np.full((n, c), smoothing / c, dtype=np.float64)
    target[np.arange(n), labels] += 1.0 - smoothing
    probs = softmax(head.logits(features).astype(np.float64))
    loss = float(-np.sum(target * np.log(probs + 1e-12)) / n)
    grad = (probs - target) / n
    return loss, (grad.T @ features).astype(np.float32), grad.sum(0).astype(np.float32)


class _Optimizer:
    """Optimiser state for (weight, bias), updated as the search engine updates its weights."""

    def __init__(self, hp: HeadHyperparameters, head: Head) -> None:
        self.hp = hp
        self.t = 0
        self.m = [np.zeros_like(head.weight), np.zeros_like(head.bias)]
        self.v = [np.zeros_like(head.weight), np.zeros_like(head.bias)]

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        """Update `params` in place; weight decay applies to the weight, not the bias."""
        self.t += 1
        lr = self.hp.learning_rate
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            decay = self.hp.weight_decay if i == 0 else 0.0
            p -= lr * self._direction(i, g) + lr * decay * p

    def _direction(self, i: int, g: np.ndarray) -> np.ndarray:
        name = self.hp.optimizer
        if name == "sgd":
            self.m[i] = MOMENTUM * self.m[i] + g
            return self.m[i]
        if name == "rmsprop":
            self.v[i] = RMSPROP_ALPHA * self.v[i] + (1 - RMSPROP_ALPHA) * g * g
            step: np.ndarray = g / (np.sqrt(self.v[i]) + EPS)
            return step
        b1, b2 = ADAM_BETAS
        self.m[i] = b1 * self.m[i] + (1 - b1) * g
        self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
        m_hat, v_hat = self.m[i] / (1 - b1**self.t), self.v[i] / (1 - b2**self.t)
        return m_hat / (np.sqrt(v_hat) + EPS)


class StepFunction(Protocol):
    """One optimiser step on a batch: updates the head it was started on, returns the batch's loss."""

    def __call__(self, features: np.ndarray, labels: np.ndarray) -> float: ...


class HeadTrainer(Protocol):
    """Runs the steps of `train_head` elsewhere (a bundle's train-step graph: `train_graph`)."""

    def start(self, hp: HeadHyperparameters, head: Head) -> StepFunction | None:
        """A step function training `head` with `hp`, or None when it cannot (numpy is used)."""
        ...


def numpy_step(hp: HeadHyperparameters, head: Head) -> StepFunction:
    """The reference step: `loss_and_grads`, then the optimiser's update of `head` in place."""
    opt = _Optimizer(hp, head)

    def step(features: np.ndarray, labels: np.ndarray) -> float:
        loss, gw, gb = loss_and_grads(head, features, labels, hp.label_smoothing)
        opt.step([head.weight, head.bias], [gw, gb])
        return loss

    return step


def train_head(
    head: Head,
    features: np.ndarray,
    labels: np.ndarray,
    hp: HeadHyperparameters,
    seed: int = 0,
    trainer: HeadTrainer | None = None,
) -> tuple[Head, list[float]]:
    """Mini-batch training of a copy of `head`; returns it and the mean loss of each epoch.

    Each step runs through `trainer` when one is given and can run `hp`, else in numpy; the batches
    (and so the result, to float32 rounding) are the same either way.
    """
    rng = np.random.default_rng(seed)
    trained = head.copy()
    step = trainer.start(hp, trained) if trainer is not None else None
    step = step or numpy_step(hp, trained)
    history: list[float] = []
    with np.errstate(over="ignore", invalid="ignore"):  # divergence is detected, not warned about
        for _ in range(hp.epochs):
            history.append(_epoch(step, features, labels, hp.batch_size, rng))
            if not np.isfinite(history[-1]):
                break
    return trained, history


def _epoch(
    step: StepFunction,
    features: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    rng: np.random.Generator,
) -> float:
    order = rng.permutation(len(labels))
    losses = []
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        losses.append(step(features[idx], labels[idx]))
    return float(np.mean(losses))


def improves(before_right: np.ndarray, after_right: np.ndarray) -> bool:
    """Whether a new head (`after_right`: which held-out examples it gets right) beats the current one
    (`before_right`) by a net gain that passes a one-sided sign test at `SIGN_TEST_Z` over the
    examples on which the two heads disagree."""
    gained = int(np.sum(after_right & ~before_right))
    lost = int(np.sum(before_right & ~after_right))
    net = gained - lost
    return net > 0 and net >= SIGN_TEST_Z * math.sqrt(gained + lost)


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, held-out) index split; every class with 2+ examples gives one or more."""
    if not 0.0 < fraction < 1.0:
        raise InvalidInputError(f"holdout fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    train, held = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        k = 0 if len(idx) < 2 else max(1, round(fraction * len(idx)))
        held.append(idx[:k])
        train.append(idx[k:])
    train_idx, held_idx = np.concatenate(train), np.concatenate(held)
    if len(held_idx) == 0 or len(train_idx) == 0:
        raise InvalidInputError(
            f"{len(labels)} examples are too few to keep a held-out part: give at least 2 of some class"
        )
    return rng.permutation(train_idx), np.sort(held_idx)
