"""Data layouts (given, from the .npz, guessed with a warning) and the checks on labels and sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from autohas_edge.server.search import load_dataset
from autohas_edge.server.search.layout import arrange


def _npz(path: Path, x: np.ndarray, y: np.ndarray | None = None, **extra: np.ndarray) -> str:
    y = np.arange(len(x)) % 2 if y is None else y
    np.savez(path, x=x, y=y, **extra)
    return str(path)


def _noise(*shape: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


def test_a_row_of_100_values_is_tabular_with_a_warning_or_a_signal_when_told(
    tmp_path: Path,
) -> None:
    path = _npz(tmp_path / "rows.npz", _noise(200, 100))
    guessed = load_dataset(path)
    assert guessed.family == "mlp" and guessed.input_shape == (100,)
    assert any("--layout signal" in n and n.startswith("warning:") for n in guessed.notes)
    told = load_dataset(path, layout="signal")
    assert told.family == "conv1d" and told.input_shape == (1, 100) and not told.notes
    assert told.describe()["layout"] == "signal" and told.describe()["layout_source"] == "given"


def test_channels_last_images_are_moved_to_channels_first(tmp_path: Path) -> None:
    x = _noise(200, 16, 12, 3)
    path = _npz(tmp_path / "hwc.npz", x)
    assert any("--channels last" in n for n in load_dataset(path).notes)  # 16 channels? warned
    data = load_dataset(path, channels="last")
    assert data.input_shape == (3, 16, 12) and data.family == "conv2d"
    np.testing.assert_array_equal(
        arrange(x, "image", "last").x[7], np.moveaxis(x[7], -1, 0)
    )  # the same example, its channel axis moved


def test_the_npz_can_declare_its_layout(tmp_path: Path) -> None:
    path = _npz(
        tmp_path / "lc.npz",
        _noise(200, 50, 3),
        layout=np.array("signal"),
        channels=np.array("last"),
    )
    data = load_dataset(path)
    assert data.input_shape == (3, 50) and data.layout_source == "the .npz's layout"
    assert not data.notes


@pytest.mark.parametrize(
    ("shape", "layout", "message"),
    [((200, 4, 4, 4), "signal", "not a signal"), ((200, 10), "image", "not a image")],
)
def test_a_layout_that_does_not_fit_the_shape_is_refused(
    tmp_path: Path, shape: tuple[int, ...], layout: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset(_npz(tmp_path / "d.npz", _noise(*shape)), layout=layout)


def test_unambiguous_shapes_are_not_warned_about() -> None:
    for shape in [(10, 6), (10, 3, 100), (10, 1, 28, 28), (10, 3, 32, 32)]:
        assert arrange(np.zeros(shape)).warning == ""


def test_labels_that_are_not_0_to_k_are_remapped_and_named(tmp_path: Path) -> None:
    y = np.repeat([0, 10, 20, 30], 50)
    data = load_dataset(_npz(tmp_path / "tens.npz", _noise(200, 6), y))
    assert data.num_classes == 4 and data.label_names == ["0", "10", "20", "30"]
    assert set(np.unique(data.y_train)) == {0, 1, 2, 3}
    assert any("remapped" in n for n in data.notes)
    named = _npz(
        tmp_path / "named.npz",
        _noise(200, 6),
        np.repeat([1, 2, 3, 4], 50),
        label_names=np.array(["walk", "run", "sit", "jump"]),
    )
    assert load_dataset(named).label_names == ["walk", "run", "sit", "jump"]


@pytest.mark.parametrize(
    ("y", "x", "message"),
    [
        (np.zeros(200, np.int64), None, "all labels are 0"),
        (np.r_[np.full(197, 0), [1, 1, 1]], None, "too few training examples of 1 class"),
        (np.r_[np.full(100, -1), np.ones(100)].astype(np.int64), None, "negative label -1"),
        (np.arange(12) % 2, _noise(12, 6), "the test split has 2 examples"),
        (None, _noise(200, 6) + 1j, "is complex"),
        (None, _noise(200, 6) * 1e30, "values up to"),
    ],
)
def test_data_a_search_cannot_learn_from_is_refused(
    tmp_path: Path, y: np.ndarray | None, x: np.ndarray | None, message: str
) -> None:
    x = _noise(200, 6) if x is None else x
    with pytest.raises(ValueError, match=message):
        load_dataset(_npz(tmp_path / "bad.npz", x, y))


def test_fixed_classes_are_not_renumbered(tmp_path: Path) -> None:
    """A server job's snapshot fixes the task's classes: labels 1..3 stay 1..3 of 4."""
    y = np.repeat([0, 1, 2, 3], 50)
    data = load_dataset(_npz(tmp_path / "job.npz", _noise(200, 6), y, num_classes=np.array(4)))
    assert data.num_classes == 4 and data.label_names == ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match="label 3 is not below the task's 3 classes"):
        load_dataset(_npz(tmp_path / "j2.npz", _noise(200, 6), y, num_classes=np.array(3)))


@pytest.mark.parametrize(
    ("spec", "message"),
    [("mnist", "did you mean mnist1d"), ("digit", "did you mean digits")],
)
def test_a_misspelt_builtin_dataset_is_suggested(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset(spec)


def test_a_directory_and_a_text_file_are_named_for_what_they_are(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a directory, not a file"):
        load_dataset(str(tmp_path))
    text = tmp_path / "data.npz"
    text.write_text("1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match=r"is not an \.npz") as info:
        load_dataset(str(text))
    assert "pickle" not in str(info.value)
