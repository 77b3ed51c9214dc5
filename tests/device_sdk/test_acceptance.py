"""The held-out rule of `Model.fine_tune`: kept only on 2 or more more held-out examples right."""

from __future__ import annotations

from autohas_edge.device_sdk.finetune import MIN_HELDOUT_GAIN, improves


def test_one_more_held_out_example_right_is_within_noise() -> None:
    assert MIN_HELDOUT_GAIN == 2
    assert not improves(27 / 30, 28 / 30, 30)  # one more right: not kept
    assert improves(27 / 30, 29 / 30, 30)  # two more: kept
    assert not improves(0.9, 0.9, 30) and not improves(0.9, 0.8, 30)
    assert not improves(1 / 2, 2 / 2, 2)  # a held-out set this small cannot show an improvement
    assert not improves(0.9, -1.0, 30)  # a diverged head (accuracy -1) never is
