"""Datasets (offline) and augmentation policies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from autohas_edge.server.search import load_dataset
from autohas_edge.server.search.augment import POLICIES, augment


def test_mnist1d_splits_and_shapes() -> None:
    data = load_dataset("mnist1d", seed=0)
    assert data.input_shape == (1, 40) and data.num_classes == 10 and data.family == "conv1d"
    assert len(data.x_train) + len(data.x_val) == 4000 and len(data.x_test) == 1000
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.label_names == [str(i) for i in range(10)]
    other = load_dataset("mnist1d", seed=1)
    assert not np.array_equal(data.y_val, other.y_val)  # the validation split follows the seed
    np.testing.assert_array_equal(data.x_test, other.x_test)  # the test split is the standard one


def test_digits_is_an_image_dataset() -> None:
    data = load_dataset("digits")
    assert data.input_shape == (1, 8, 8) and data.family == "conv2d" and data.num_classes == 10


def test_npz_tabular(toy_tabular_npz: Path) -> None:
    data = load_dataset(str(toy_tabular_npz))
    assert data.input_shape == (6,) and data.family == "mlp" and len(data.x_test) == 60
    assert data.name == "tabular" and data.describe()["num_classes"] == 3


def test_npz_label_names_and_test_split(toy_signal_npz: Path) -> None:
    data = load_dataset(str(toy_signal_npz))
    assert data.label_names == ["c0", "c1", "c2"]
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 240


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((20, 4), np.float32)}, "has no array 'y'"),
        ({"x": np.zeros((20, 4)), "y": np.zeros(19, np.int64)}, "one label per row"),
        ({"x": np.zeros((20, 4)), "y": np.full(20, 0.5)}, "integer labels"),
        ({"x": np.zeros(20), "y": np.zeros(20, np.int64)}, "must be numeric"),
        ({"x": np.full((20, 4), np.nan), "y": np.zeros(20, np.int64)}, "NaN"),
    ],
)
def test_malformed_npz_names_file_and_problem(tmp_path: Path, arrays: dict, message: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=message) as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.npz"))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"not an \.npz") as info:
        load_dataset(str(garbage))
    assert "pickle" not in str(info.value)


@pytest.mark.parametrize(
    ("modality", "shape"), [("signal", (5, 1, 40)), ("image", (5, 1, 8, 8)), ("tabular", (5, 6))]
)
def test_augmentations_keep_shape_and_are_reproducible(modality: str, shape: tuple) -> None:
    x = torch.randn(shape)
    for policy in POLICIES[modality]:
        a = augment(x, policy, 1.0, torch.Generator().manual_seed(0))
        b = augment(x, policy, 1.0, torch.Generator().manual_seed(0))
        assert a.shape == x.shape and torch.equal(a, b)
        assert policy == "none" or not torch.equal(a, x)


def test_signal_shift_is_circular() -> None:
    x = torch.arange(40, dtype=torch.float32).view(1, 1, 40).repeat(8, 1, 1)
    shifted = augment(x, "shift", 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(shifted.sort(dim=-1).values, x)  # a permutation of the same samples
