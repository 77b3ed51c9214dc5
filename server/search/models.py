"""The derived (discrete) model that export converts, its layout per family, and its parameter count.

The model is plain Conv/BatchNorm/ReLU6/Linear layers with global mean pooling and no data-dependent
control flow; it takes raw float32 input and normalises it with buffers (docs/architecture.md §4).
`model_args` (JSON-ready) rebuilds it: `build_model(model_args)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

ModelArgs = dict[str, Any]


@dataclass(frozen=True)
class BlockSpec:
    """One searchable block position: channels in/out, stride, and whether depth may skip it."""

    in_ch: int
    out_ch: int
    stride: int = 1

    @property
    def residual(self) -> bool:
        """Identity shortcut (and so a possible skip) when shape is preserved."""
        return self.stride == 1 and self.in_ch == self.out_ch


@dataclass(frozen=True)
class Layout:
    """The fixed skeleton of a family: stem, block positions and head width."""

    family: str
    stem_ch: int
    stem_kernel: int
    stem_stride: int
    blocks: tuple[BlockSpec, ...]

    @property
    def block_stages(self) -> tuple[tuple[int, int], ...]:
        """(input stage, output stage) of every block. A stage is a run of positions joined by
        identity shortcuts (the stem starts stage 0; a block that changes shape starts the next), so
        all its positions share one width."""
        stages, current = [], 0
        for spec in self.blocks:
            start = current
            current = current if spec.residual else current + 1
            stages.append((start, current))
        return tuple(stages)

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """The widest channel count of every stage (the stem's, then each new stage's)."""
        channels = [self.stem_ch]
        for spec, (start, end) in zip(self.blocks, self.block_stages, strict=True):
            if end != start:
                channels.append(spec.out_ch)
        return tuple(channels)


def width_name(stage: int) -> str:
    """The architecture choice holding stage `stage`'s width (a fraction of its widest)."""
    return f"s{stage}.width"


def channels_at(widest: int, fraction: float) -> int:
    """Channels of a stage at `fraction` of its widest (at least 4)."""
    return max(4, round(widest * float(fraction)))


def stage_widths(layout: Layout, arch: dict[str, Any]) -> list[int]:
    """Channels of every stage under `arch` (a stage without a width choice keeps its widest)."""
    return [
        channels_at(widest, arch.get(width_name(s), 1.0))
        for s, widest in enumerate(layout.stage_channels)
    ]


_CONV1D = Layout(
    "conv1d",
    24,
    5,
    1,
    (
        BlockSpec(24, 24),
        BlockSpec(24, 32, 2),
        BlockSpec(32, 32),
        BlockSpec(32, 48, 2),
        BlockSpec(48, 48),
    ),
)
_CONV2D = Layout(
    "conv2d",
    16,
    3,
    1,
    (
        BlockSpec(16, 16),
        BlockSpec(16, 24, 2),
        BlockSpec(24, 24),
        BlockSpec(24, 32, 2),
        BlockSpec(32, 32),
    ),
)
_MLP = Layout("mlp", 64, 0, 1, (BlockSpec(64, 64), BlockSpec(64, 64), BlockSpec(64, 64)))
LAYOUTS = {"conv1d": _CONV1D, "conv2d": _CONV2D, "mlp": _MLP}


def conv_cls(dims: int) -> type[nn.Conv1d] | type[nn.Conv2d]:
    """nn.Conv1d or nn.Conv2d."""
    return nn.Conv1d if dims == 1 else nn.Conv2d


def bn_cls(dims: int) -> type[nn.BatchNorm1d] | type[nn.BatchNorm2d]:
    """nn.BatchNorm1d or nn.BatchNorm2d."""
    return nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d


def conv_bn(
    dims: int, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1
) -> tuple[nn.Conv1d | nn.Conv2d, nn.BatchNorm1d | nn.BatchNorm2d]:
    """Convolution (no bias) followed by batch norm."""
    conv = conv_cls(dims)(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    return conv, bn_cls(dims)(cout)


class InvertedResidual(nn.Module):
    """MobileNet-V2 block: 1x1 expand, depthwise k, 1x1 linear projection, shortcut when shapes match."""

    def __init__(self, dims: int, spec: BlockSpec, kernel: int, expansion: int) -> None:
        super().__init__()
        hidden = spec.in_ch * expansion
        self.residual = spec.residual
        self.body = nn.Sequential(
            *conv_bn(dims, spec.in_ch, hidden, 1),
            nn.ReLU6(),
            *conv_bn(dims, hidden, hidden, kernel, spec.stride, groups=hidden),
            nn.ReLU6(),
            *conv_bn(dims, hidden, spec.out_ch, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        y: torch.Tensor = self.body(x)
        return x + y if self.residual else y


class MLPBlock(nn.Module):
    """Residual MLP block: linear expand, ReLU, linear projection (batch norm after each linear)."""

    def __init__(self, spec: BlockSpec, expansion: int) -> None:
        super().__init__()
        hidden = spec.in_ch * expansion
        self.residual = spec.residual
        self.body = nn.Sequential(
            nn.Linear(spec.in_ch, hidden, bias=False),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, spec.out_ch, bias=False),
            nn.BatchNorm1d(spec.out_ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        y: torch.Tensor = self.body(x)
        return x + y if self.residual else y


class ChildNet(nn.Module):
    """The derived model: normalise (buffers), stem, blocks, global mean pooling, linear classifier."""

    norm_mean: torch.Tensor  # buffers, registered in __init__
    norm_std: torch.Tensor

    def __init__(self, model_args: ModelArgs) -> None:
        super().__init__()
        self.model_args = model_args
        family, shape = model_args["family"], tuple(model_args["input_shape"])
        stem = model_args["stem"]
        norm_shape = (1, shape[0]) + (1,) * (len(shape) - 1) if family != "mlp" else (1, shape[0])
        self.register_buffer("norm_mean", torch.zeros(norm_shape))
        self.register_buffer("norm_std", torch.ones(norm_shape))
        if family == "mlp":
            self.stem = nn.Sequential(
                nn.Linear(shape[0], stem["channels"], bias=False),
                nn.BatchNorm1d(stem["channels"]),
                nn.ReLU(),
            )
        else:
            dims = 1 if family == "conv1d" else 2
            self.stem = nn.Sequential(
                *conv_bn(dims, shape[0], stem["channels"], stem["kernel"], stem["stride"]),
                nn.ReLU6(),
            )
        self.blocks = nn.Sequential(*(_block(family, b) for b in model_args["blocks"]))
        width = model_args["blocks"][-1]["out"] if model_args["blocks"] else stem["channels"]
        self.pool_dims = tuple(range(2, len(shape) + 1)) if family != "mlp" else ()
        self.classifier = nn.Linear(width, model_args["num_classes"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vector [batch, D] after global pooling (what the device head trains on)."""
        h: torch.Tensor = self.blocks(self.stem((x - self.norm_mean) / self.norm_std))
        return h.mean(dim=self.pool_dims) if self.pool_dims else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [batch, num_classes]."""
        logits: torch.Tensor = self.classifier(self.features(x))
        return logits


def _block(family: str, b: dict[str, int]) -> nn.Module:
    spec = BlockSpec(b["in"], b["out"], b["stride"])
    if family == "mlp":
        return MLPBlock(spec, b["expansion"])
    return InvertedResidual(1 if family == "conv1d" else 2, spec, b["kernel"], b["expansion"])


def build_model(model_args: ModelArgs) -> ChildNet:
    """Rebuild the derived model from its JSON-ready arguments."""
    return ChildNet(model_args)


def model_args_for(
    layout: Layout, input_shape: tuple[int, ...], num_classes: int, arch: dict[str, Any]
) -> ModelArgs:
    """Arguments of the discrete model that `arch` (choice name -> value) selects from `layout`."""
    blocks = []
    widths = stage_widths(layout, arch)
    for j, (spec, (start, end)) in enumerate(zip(layout.blocks, layout.block_stages, strict=True)):
        if arch.get(f"b{j}.depth", "keep") == "skip":
            continue
        block = {
            "in": widths[start],
            "out": widths[end],
            "stride": spec.stride,
            "expansion": int(arch[f"b{j}.expansion"]),
        }
        if layout.family != "mlp":
            block["kernel"] = int(arch[f"b{j}.kernel"])
        blocks.append(block)
    stem = {"channels": widths[0], "kernel": layout.stem_kernel, "stride": layout.stem_stride}
    return {
        "family": layout.family,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "stem": stem,
        "blocks": blocks,
    }


def count_params(model_args: ModelArgs) -> int:
    """Number of parameters of the model `model_args` describes, computed without building it."""
    family, shape = model_args["family"], model_args["input_shape"]
    stem = model_args["stem"]
    width = stem["channels"]
    total = (
        shape[0] * width * (1 if family == "mlp" else stem["kernel"] ** (len(shape) - 1))
        + 2 * width
    )
    for b in model_args["blocks"]:
        taps = b.get("kernel", 0) ** (len(shape) - 1)
        total += block_params(family, b["in"], b["out"], taps, b["in"] * b["expansion"])
        width = b["out"]
    return int(total + width * model_args["num_classes"] + model_args["num_classes"])


def block_params(family: str, cin: int, cout: int, taps: Any, hidden: Any) -> Any:
    """Parameters of one block with `hidden` channels and a depthwise kernel of `taps` taps.

    Bilinear in (taps, hidden), so with independent choices the expectation over the encodings is this
    formula applied to E[taps] and E[hidden]: the same code serves counting and the expected cost.
    """
    dw = 0 if family == "mlp" else hidden * (taps + 2)
    return hidden * (cin + 2) + dw + hidden * cout + 2 * cout
