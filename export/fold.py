"""Fold batch norm into the preceding convolution or linear layer before conversion.

litert-torch lowers an unfolded BatchNorm to a separate MUL + ADD, so int8 quantization then needs one
per-tensor scale for conv outputs whose channels differ widely in range; on the MNIST-1D model that cost
11 points of test accuracy. Folded, the graph is also smaller and faster in every runtime.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def fold_batch_norm(model: nn.Module) -> tuple[nn.Module, int]:
    """An eval copy of `model`, each (Conv|Linear, BatchNorm) pair in a Sequential fused, and the count."""
    folded = copy.deepcopy(model).eval()
    count = 0
    for module in folded.modules():
        if isinstance(module, nn.Sequential):
            count += _fold_sequential(module)
    return folded, count


def _fold_sequential(seq: nn.Sequential) -> int:
    names = list(seq._modules)
    count = 0
    for first, second in itertools.pairwise(names):
        layer, norm = seq._modules[first], seq._modules[second]
        if isinstance(layer, _FOLDABLE) and isinstance(norm, _BatchNorm) and _matches(layer, norm):
            fused: nn.Module
            with torch.no_grad():
                if isinstance(layer, nn.Linear):
                    fused = fuse_linear_bn_eval(layer, norm)
                else:
                    fused = fuse_conv_bn_eval(layer, norm)
            seq._modules[first] = fused
            seq._modules[second] = nn.Identity()
            count += 1
    return count


def _matches(layer: nn.Module, norm: _BatchNorm) -> bool:
    """A batch norm in eval mode with running statistics over the layer's output channels."""
    if norm.running_mean is None:
        return False
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return norm.num_features == channels
