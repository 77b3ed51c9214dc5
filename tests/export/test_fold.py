"""Batch-norm folding: same outputs, no BatchNorm left, the original model untouched."""

from __future__ import annotations

import torch
from torch import nn

from autohas_edge.export.fold import fold_batch_norm
from tests.export.helpers import ToyNet, toy_data


def test_folding_keeps_outputs_and_removes_batch_norm() -> None:
    model = ToyNet().eval()
    with torch.no_grad():  # non-trivial statistics, so a wrong fold would show
        bn = model.body[1]
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 2)
    folded, count = fold_batch_norm(model)
    x = torch.from_numpy(toy_data()[0])
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    assert count == 1 and not any(isinstance(m, nn.BatchNorm1d) for m in folded.modules())
    assert isinstance(model.body[1], nn.BatchNorm1d)  # a copy was folded
