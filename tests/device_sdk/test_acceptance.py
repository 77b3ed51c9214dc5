"""The held-out rule of `Model.fine_tune`: kept only on a net gain of held-out examples that a
one-sided sign test over the examples the two heads disagree on accepts."""

from __future__ import annotations

import numpy as np

from autohas_edge.device_sdk.finetune import SIGN_TEST_Z, improves


def _right(n: int, wrong: list[int]) -> np.ndarray:
    right = np.ones(n, bool)
    right[wrong] = False
    return right


def test_two_more_held_out_examples_right_are_within_noise_three_are_not() -> None:
    assert SIGN_TEST_Z == 1.645
    before = _right(30, [0, 1, 2, 3])
    assert not improves(before, _right(30, [0, 1, 2]))  # one more right: not kept
    assert not improves(before, _right(30, [0, 1]))  # two more: 2 < 1.645 * sqrt(2)
    assert improves(before, _right(30, [0]))  # three more, none lost: kept
    assert not improves(before, before) and not improves(before, _right(30, [0, 1, 2, 3, 4, 5]))
    assert not improves(_right(2, [0]), _right(2, []))  # too few held out to show anything
    assert not improves(before, np.zeros(30, bool))  # a diverged head gets nothing right


def test_a_net_gain_made_of_many_changes_either_way_is_not_kept() -> None:
    before = _right(40, list(range(10)))  # wrong on 0-9
    six_gained_three_lost = _right(40, [6, 7, 8, 9, 10, 11, 12])
    assert not improves(before, six_gained_three_lost)  # +3, but 3 < 1.645 * sqrt(9)
    ten_gained_three_lost = _right(40, [10, 11, 12])
    assert improves(before, ten_gained_three_lost)  # +7 >= 1.645 * sqrt(13)
