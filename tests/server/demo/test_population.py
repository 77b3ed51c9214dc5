"""The demo's population: 3-axis gesture recordings to upload and evaluate on, and fresh ones to
fine-tune on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from autohas_edge.server.demo.population import CHANNELS, SIGNAL_LENGTH, make_population, record


def test_fresh_examples_are_other_examples_in_the_users_style() -> None:
    small, large = make_population(3, fresh_per_user=10), make_population(3, fresh_per_user=40)
    for a, b in zip(small, large, strict=True):
        np.testing.assert_array_equal(a.x, b.x)  # what devices upload and evaluate on is unchanged
        np.testing.assert_array_equal(a.style.motion.scale, b.style.motion.scale)
        assert b.x_fresh.shape == (40, CHANNELS, SIGNAL_LENGTH) and len(b.y_fresh) == 40
        rows = {row.tobytes() for row in b.x}
        assert not any(row.tobytes() in rows for row in b.x_fresh)  # none of them seen before
        if b.style.swapped is None:
            favourites = np.isin(b.y_fresh, b.style.favourite_classes).mean()
            assert favourites > 0.5  # the same label skew (80% expected)


def test_users_differ_in_style_and_swapped_users_label_two_gestures_the_other_way() -> None:
    users = make_population(12, seed=1)
    offsets = np.stack([u.style.motion.offset for u in users])
    assert offsets.std(axis=0).min() > 0.2  # every axis is biased differently per user
    swapped = [u for u in users if u.style.swapped is not None]
    assert swapped and len(swapped) < len(users)
    style = swapped[0].style
    a, b = style.swapped
    x, y = record(style, 60, np.random.default_rng(5))
    x_plain, y_plain = record(replace(style, swapped=None), 60, np.random.default_rng(5))
    np.testing.assert_array_equal(x, x_plain)  # the same motions...
    expected = np.where(y_plain == a, b, np.where(y_plain == b, a, y_plain))
    np.testing.assert_array_equal(y, expected)  # ...with the two gestures' names exchanged
    assert {a, b} & set(y_plain.tolist())
