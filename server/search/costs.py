"""What a derived model costs on a device besides its parameters: FLOPs, from its shapes alone.

FLOPs here are multiply-accumulates of the convolutions and linear layers (the mobile literature's
convention, MobileNetV2's "MAdds"); batch norm folds into the convolutions at export and activations
are free next to them. Like the parameter count, a block's FLOPs are bilinear in (depthwise taps,
hidden channels), so the expectation under independent choices is the same formula applied to
expected taps and expected hidden channels: one formula serves counting and the search's penalty.
"""

from __future__ import annotations

import math
from typing import Any

from autohas_edge.server.search.models import Layout, ModelArgs


def positions_after(shape: tuple[int, ...], stride: int) -> tuple[int, ...]:
    """Spatial shape after a convolution of odd kernel, padding kernel // 2 and `stride`."""
    return tuple(math.ceil(n / stride) for n in shape)


def block_positions(layout: Layout, input_shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """(input positions, output positions) of every block position of `layout` (1 for mlp).

    Skipping a block never changes a shape (only stride-1 residual blocks can be skipped), so these
    hold for every architecture of the layout."""
    if layout.family == "mlp":
        return [(1, 1)] * len(layout.blocks)
    shape = positions_after(tuple(input_shape[1:]), layout.stem_stride)
    out = []
    for spec in layout.blocks:
        after = positions_after(shape, spec.stride)
        out.append((math.prod(shape), math.prod(after)))
        shape = after
    return out


def stem_positions(layout: Layout, input_shape: tuple[int, ...]) -> int:
    """Output positions of the stem (1 for mlp)."""
    if layout.family == "mlp":
        return 1
    return math.prod(positions_after(tuple(input_shape[1:]), layout.stem_stride))


def block_flops(
    family: str, cin: Any, cout: Any, taps: Any, hidden: Any, positions: tuple[int, int]
) -> Any:
    """Multiply-accumulates of one block: 1x1 expand at the input resolution, depthwise and 1x1
    projection at the output resolution (linear layers for mlp)."""
    s_in, s_out = positions
    if family == "mlp":
        return hidden * cin + hidden * cout
    return hidden * cin * s_in + hidden * taps * s_out + hidden * cout * s_out


def count_flops(model_args: ModelArgs) -> int:
    """FLOPs (multiply-accumulates) of one inference of the model `model_args` describes.

    Skipped blocks are stride-1 and shape-preserving, so following the kept blocks' strides gives
    every kept block its resolution."""
    family, shape = model_args["family"], tuple(model_args["input_shape"])
    stem = model_args["stem"]
    if family == "mlp":
        spatial: tuple[int, ...] = ()
        total = shape[0] * stem["channels"]
    else:
        spatial = positions_after(shape[1:], stem["stride"])
        taps = stem["kernel"] ** len(spatial)
        total = shape[0] * stem["channels"] * taps * math.prod(spatial)
    width = stem["channels"]
    for b in model_args["blocks"]:
        after = positions_after(spatial, b["stride"])
        taps = b.get("kernel", 0) ** len(spatial)
        where = (math.prod(spatial), math.prod(after))
        total += block_flops(family, b["in"], b["out"], taps, b["in"] * b["expansion"], where)
        spatial, width = after, b["out"]
    return int(total + width * model_args["num_classes"])
