"""The normalisation statistics every artifact carries: exact for public data and for a cohort of
several people, noised for fewer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autohas_edge.server.engine import EXACT_STATS_USERS, NORM_NOISE, search_config
from autohas_edge.server.search.runner import norm_stats


def _profiled() -> np.ndarray:
    x = np.random.default_rng(3).normal(2.0, 1.5, size=(200, 3, 10)).astype(np.float32)
    x[:, 1, :] = 42.0  # one channel constant: e.g. a user's device model
    return x


def test_without_noise_the_statistics_are_exact() -> None:
    x = _profiled()
    mean, std = norm_stats(x, "conv1d")
    assert mean.shape == (1, 3, 1) and mean[0, 1, 0] == np.float32(42.0)
    np.testing.assert_allclose(std[0, 0, 0], x[:, 0, :].std() + 1e-6, rtol=1e-6)


def test_noise_hides_exact_values_and_is_the_same_for_every_model_of_a_search() -> None:
    x = _profiled()
    mean, std = norm_stats(x, "conv1d", noise=NORM_NOISE, seed=7)
    assert mean[0, 1, 0] != np.float32(42.0)  # the constant is not copied
    assert abs(float(mean[0, 1, 0]) - 42.0) < 6 * NORM_NOISE * 42.0  # still a usable scale
    assert np.all(std > 0) and mean.dtype == std.dtype == np.float32
    again = norm_stats(x, "conv1d", noise=NORM_NOISE, seed=7)
    np.testing.assert_array_equal(mean, again[0])  # searcher and retraining agree
    other = norm_stats(x, "conv1d", noise=NORM_NOISE, seed=8)
    assert not np.array_equal(mean, other[0])


def _snapshot(path: Path, users: int) -> str:
    """A job snapshot's arrays: examples and the (app, user) that owns each row."""
    x = _profiled()
    np.savez(
        path,
        x=x,
        y=np.arange(len(x)) % 2,
        owner_app=np.array(["app"] * users),
        owner_user=np.array([f"user-{i}" for i in range(users)]),
        row_owner=np.arange(len(x)) % users,
    )
    return str(path)


def test_the_server_noises_the_statistics_of_a_small_cohort_only(tmp_path: Path) -> None:
    spec = {"task_id": "t", "steps": 10}
    one = search_config(spec, _snapshot(tmp_path / "one.npz", 1), "cpu")
    assert one.norm_noise == NORM_NOISE > 0  # one person's statistics
    few = search_config(spec, _snapshot(tmp_path / "few.npz", EXACT_STATS_USERS - 1), "cpu")
    assert few.norm_noise == NORM_NOISE
    cohort = search_config(spec, _snapshot(tmp_path / "many.npz", EXACT_STATS_USERS), "cpu")
    assert cohort.norm_noise == 0.0  # a cohort's statistics
