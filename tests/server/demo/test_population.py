"""The demo's population: examples to upload and evaluate on, and fresh ones to fine-tune on."""

from __future__ import annotations

import numpy as np

from autohas_edge.server.demo.population import make_population


def test_fresh_examples_are_other_examples_in_the_users_style() -> None:
    small, large = make_population(3, fresh_per_user=10), make_population(3, fresh_per_user=40)
    for a, b in zip(small, large, strict=True):
        np.testing.assert_array_equal(a.x, b.x)  # what devices upload and evaluate on is unchanged
        assert a.style == b.style and b.x_fresh.shape == (40, 1, 40) and len(b.y_fresh) == 40
        rows = {row.tobytes() for row in b.x}
        assert not any(row.tobytes() in rows for row in b.x_fresh)  # none of them seen before
        if b.style.swapped is None:
            favourites = np.isin(b.y_fresh, b.style.favourite_classes).mean()
            assert favourites > 0.5  # the same label skew (80% expected)
