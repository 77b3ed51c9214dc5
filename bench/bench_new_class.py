"""User-defined classes: accuracy of a class added on the device from 5/10/20 examples, and the cost.

    python -m bench.bench_new_class                  # a trained MNIST-1D bundle found or built
    python -m bench.bench_new_class --bundle DIR     # an exported MNIST-1D bundle

Two protocols, each with and without `known_x`/`known_y` (5 of the user's examples of every old
class, passed by the app):

- "held-out class": one of the bundle's 10 classes is dropped from its head, then added back from
  n training examples (`device_sdk.classes.grow_head`, what `Model.add_class` runs). The feature
  extractor was trained on that class, so this is the easy case;
- "new shape": a class the model never saw, a new MNIST-1D template (zigzag, step, ...) drawn with
  mnist1d's own transforms, added through the public API (`Model.add_class`).

New-class accuracy is measured on examples not used to add it; old-class accuracy on the standard
test split (without the dropped class). A rejected add (held-out check failed) counts as 0% on the
new class and no loss on the old ones ("kept adds": the accepted ones only). Prints a table; writes
nothing.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autohas_edge.device_sdk import Hub, Manifest, Model
from autohas_edge.device_sdk.bundle import load_head
from autohas_edge.device_sdk.classes import grow_head
from autohas_edge.device_sdk.finetune import Head, HeadHyperparameters
from autohas_edge.server.search import mnist1d_arrays
from bench.results import markdown_table

SHOTS = (5, 10, 20)
KNOWN_PER_CLASS = 5
SEEDS = (0, 1, 2)
TASK = "mnist1d"
#: new MNIST-1D templates (12 points, as mnist1d's digits): shapes none of the 10 classes has
NEW_SHAPES = {
    "zigzag": [5, 7, 3, 7, 3, 7, 3, 7, 3, 7, 3, 5],
    "step": [5, 5, 5, 5, 5, 5, 7.5, 7.5, 7.5, 7.5, 7.5, 5],
    "wave": [5, 6.5, 7, 6.5, 5, 3.5, 3, 3.5, 5, 6.5, 7, 5],
    "square": [5, 3, 3, 7, 7, 3, 3, 7, 7, 3, 3, 5],
    "ramp": [5, 5.5, 6, 6.5, 7, 7.5, 8, 7.5, 6, 5, 5, 5],
    "spikes": [5, 2, 5, 5, 5, 5, 5, 5, 5, 8, 5, 5],
}
PER_SHAPE = 250


@dataclass(frozen=True)
class Trial:
    """One added class: kept or not, its accuracy, the old classes' accuracy before and after."""

    accepted: bool
    new_accuracy: float
    old_before: float
    old_after: float


@dataclass(frozen=True)
class Data:
    """MNIST-1D train/test examples (x [n, 1, 40], y) and the new shapes' examples."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_new: np.ndarray
    y_new: np.ndarray  # index into NEW_SHAPES


def new_shape_examples(per_shape: int = PER_SHAPE, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Examples of the new templates, standardised together with the 10 digits as mnist1d does."""
    from mnist1d.data import get_dataset_args, get_templates, make_dataset

    digits = get_templates()
    rows = np.asarray(list(NEW_SHAPES.values()), dtype=np.float64)
    rows -= rows.mean(1, keepdims=True)  # mnist1d's own template normalisation
    rows /= rows.std(1, keepdims=True)
    rows -= rows[:, :1]
    count = len(digits["y"]) + len(rows)
    templates = {"x": np.vstack([digits["x"], rows / 6.0]), "t": digits["t"], "y": np.arange(count)}
    args = get_dataset_args()
    args.num_samples, args.seed, args.train_split = per_shape * count, seed, 1.0
    made = make_dataset(args, templates)
    x, y = np.asarray(made["x"], np.float32)[:, None, :], np.asarray(made["y"])
    keep = y >= len(digits["y"])
    return np.ascontiguousarray(x[keep]), y[keep] - len(digits["y"])


def load_data() -> Data:
    """The standard MNIST-1D splits and the new shapes."""
    x_train, y_train, x_test, y_test = mnist1d_arrays()
    return Data(x_train, y_train, x_test, y_test, *new_shape_examples())


def known_examples(data: Data, rng: np.random.Generator, skip: int = -1) -> np.ndarray:
    """Indices into the train split: `KNOWN_PER_CLASS` of every class but `skip`."""
    classes = [c for c in range(10) if c != skip]
    picks = [rng.choice(np.flatnonzero(data.y_train == c), KNOWN_PER_CLASS, False) for c in classes]
    return np.concatenate(picks)


# -- "held-out class": the algorithm on a head without one class ------------------------------------


@dataclass(frozen=True)
class Features:
    """The bundle's downloaded head, its fine-tuning settings and the features of both splits."""

    head: Head
    hp: HeadHyperparameters
    train: np.ndarray
    test: np.ndarray


def held_out_class_trial(
    feats: Features, data: Data, k: int, shots: int, known: bool, seed: int
) -> Trial:
    """Drop class `k` from the head, add it back from `shots` training examples."""
    rng = np.random.default_rng(seed)
    keep = [c for c in range(10) if c != k]
    remap = np.full(10, -1)
    remap[keep] = np.arange(9)
    small = Head(feats.head.weight[keep].copy(), feats.head.bias[keep].copy())
    pick = rng.choice(np.flatnonzero(data.y_train == k), shots, replace=False)
    idx = known_examples(data, rng, k) if known else np.zeros(0, np.int64)
    known_labels = remap[data.y_train[idx]]
    growth = grow_head(
        small, feats.train[pick], feats.train[idx], known_labels, feats.hp, seed=seed
    )
    grown = growth.head if growth.accepted else small
    old = data.y_test != k
    old_x, old_y = feats.test[old], remap[data.y_test[old]]
    new_pred = grown.logits(feats.test[~old]).argmax(1)
    return Trial(
        growth.accepted,
        float(np.mean(new_pred == 9)),
        small.accuracy(old_x, old_y),
        grown.accuracy(old_x, old_y),
    )


def held_out_class_trials(
    model: Model, data: Data, shots: int, known: bool, bundle: Path
) -> list[Trial]:
    """Every class, every seed (`bundle`: where the downloaded head is)."""
    head = Head(*load_head(bundle, Manifest.load(bundle)))
    feats = Features(
        head,
        HeadHyperparameters.from_mapping(model.manifest.fine_tuning.hyperparameters),
        model.embed(data.x_train),
        model.embed(data.x_test),
    )
    return [
        held_out_class_trial(feats, data, k, shots, known, seed)
        for k in range(10)
        for seed in SEEDS
    ]


# -- "new shape": the public API -----------------------------------------------------------------------


def new_shape_trial(
    model: Model, data: Data, shape: int, shots: int, known: bool, seed: int
) -> Trial:
    """Add new shape `shape` from `shots` examples with `model.add_class`, then measure."""
    rng = np.random.default_rng(seed)
    model.reset(0)
    mine = rng.permutation(np.flatnonzero(data.y_new == shape))
    idx = known_examples(data, rng)
    extra = {"known_x": data.x_train[idx], "known_y": data.y_train[idx]} if known else {}
    before = _accuracy(model, data.x_test, data.y_test)
    result = model.add_class(list(NEW_SHAPES)[shape], data.x_new[mine[:shots]], seed=seed, **extra)
    rest = data.x_new[mine[shots:]]
    new = float(np.mean(model.predict(rest).argmax(1) == 10)) if result.accepted else 0.0
    return Trial(result.accepted, new, before, _accuracy(model, data.x_test, data.y_test))


def new_shape_trials(model: Model, data: Data, shots: int, known: bool) -> list[Trial]:
    """Every new shape, every seed."""
    return [
        new_shape_trial(model, data, shape, shots, known, seed)
        for shape in range(len(NEW_SHAPES))
        for seed in SEEDS
    ]


def _accuracy(model: Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(model.predict(x).argmax(1) == y))


# -- running ------------------------------------------------------------------------------------------


def find_bundle() -> Path:
    """A trained MNIST-1D bundle: bench_sdk's, else one built like it (`make demo`'s bundle is of
    3-axis gestures, not MNIST-1D)."""
    from bench import bench_sdk

    built = bench_sdk.OUT / "dist" / "run"
    if (built / "manifest.json").is_file():
        return built
    return bench_sdk.build_bundle(bench_sdk.OUT, 200, 1500)


def summarise(trials: Iterable[Trial]) -> tuple[str, ...]:
    """Table cells: accepted share, new-class accuracy (all adds; kept ones), old-class points lost."""
    rows = list(trials)
    kept = [t for t in rows if t.accepted]
    new_kept = np.mean([t.new_accuracy for t in kept]) if kept else float("nan")
    new = sum(t.new_accuracy for t in kept) / len(rows)
    lost = sum(t.old_before - t.old_after for t in kept) / len(rows)
    return f"{len(kept) / len(rows):.0%}", f"{new:.1%}", f"{new_kept:.1%}", f"{100 * lost:+.2f}"


def run(bundle: Path, fmt: str = "onnx") -> str:
    """Measure every protocol, variant and shot count; the Markdown table."""
    data = load_data()
    work = Path(tempfile.mkdtemp(prefix="bench-new-class-"))
    try:
        hub = Hub(work / "hub", threads=1, allow_unsigned=True)  # a bundle this run exported
        hub.install(bundle, TASK)
        protocols: dict[str, Callable[[Model, Data, int, bool], list[Trial]]] = {
            "held-out class": functools.partial(held_out_class_trials, bundle=bundle),
            "new shape": new_shape_trials,
        }
        rows = []
        for name, trials in protocols.items():
            for known in (False, True):
                for shots in SHOTS:
                    model = hub.model(
                        TASK, app_id=f"bench.{shots}.{known}", private=True, format=fmt
                    )
                    cells = summarise(trials(model, data, shots, known))
                    rows.append(
                        [name, f"{KNOWN_PER_CLASS}/class" if known else "none", shots, *cells]
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    headers = [
        "protocol",
        "known examples",
        "shots",
        "accepted",
        "new-class acc",
        "new-class acc (kept adds)",
        "old-class pts lost",
    ]
    return markdown_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    """Print the table for a bundle (found or built when not given)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="an exported MNIST-1D bundle")
    parser.add_argument("--format", default="onnx", help="onnx, tflite, onnx-int8, tflite-int8")
    args = parser.parse_args(argv)
    bundle = args.bundle or find_bundle()
    print(f"bundle: {bundle}\n")
    print(run(bundle, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
