"""The SuperModel: one set of shared weights W that holds every candidate architecture.

A mixed block keeps only the largest candidate's weights and mixes candidates where the mixture is
exact and cheap (the single-path / channel-masking idea of Single-Path NAS and FBNetV2):
- kernel size: the depthwise convolution is linear in its kernel, so ``sum_k P_k conv(x, W_k)`` equals
  ``conv(x, sum_k P_k W_k)`` where W_k is the centre k-slice of one large kernel;
- expansion ratio: candidate e uses the first ``in * e`` hidden channels; up to the projection every
  hidden channel is computed independently, and the projection is linear, so the mixture of candidate
  outputs equals projecting the hidden activations times the mask ``sum_e P_e * 1[c < in * e]``;
- depth: ``P_keep * (x + block(x)) + P_skip * x = x + P_keep * block(x)``;
- width (channels of a stage, FBNetV2's channel masking): candidate w keeps the first ``C * w``
  output channels of every position of the stage; the mixture multiplies those outputs by
  ``sum_w P_w * 1[c < C * w]`` (zeros beyond a one-hot width, so the next layer sees the child's input).
So the mixed block costs about as much as the largest candidate, not the sum of all of them.

A *sampled* sub-model (`SubModel`, what the controller strategy draws) runs on the slices alone: the
chosen kernel taps and hidden channels, skipped blocks not at all. It computes exactly what the one-hot
mixture computes, at the sub-model's own cost in time and memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autohas_edge.server.search.costs import block_flops, block_positions, stem_positions
from autohas_edge.server.search.models import (
    BlockSpec,
    Layout,
    ModelArgs,
    block_params,
    bn_cls,
    channels_at,
    conv_bn,
    width_name,
)
from autohas_edge.server.search.space import Choice

Probs = dict[str, torch.Tensor]


@dataclass(frozen=True)
class SubModel:
    """One candidate architecture: choice name -> index of the chosen candidate."""

    picks: dict[str, int]

    def get(self, name: str, default: int = 0) -> int:
        """The chosen index of `name` (`default` when the space has no such choice)."""
        return self.picks.get(name, default)


Arch = Probs | SubModel


def detached(arch: Arch) -> Arch:
    """The architecture with its probabilities cut from the autograd graph (a `SubModel` as it is)."""
    return arch if isinstance(arch, SubModel) else {k: v.detach() for k, v in arch.items()}


def _values(arch: dict[str, Choice], name: str, default: tuple) -> tuple:
    return tuple(arch[name].candidates) if name in arch else default


@dataclass(frozen=True)
class StageWidth:
    """The width choice of one stage: its name, widest channel count and candidate channel counts."""

    name: str
    widest: int
    channels: tuple[int, ...]

    @classmethod
    def of(cls, stage: int, widest: int, arch: dict[str, Choice]) -> StageWidth:
        """Stage `stage`'s width from the space (its widest only, when the space has no such choice)."""
        name = width_name(stage)
        fractions = _values(arch, name, (1.0,))
        return cls(name, widest, tuple(channels_at(widest, f) for f in fractions))

    def masks(self) -> torch.Tensor:
        """[candidates, widest]: 1 for the channels each candidate keeps."""
        channel = torch.arange(self.widest)
        return torch.stack([(channel < c).to(torch.get_default_dtype()) for c in self.channels])

    def probs(self, probs: Probs, device: torch.device) -> torch.Tensor:
        """This stage's width probabilities (a constant 1 without a width choice)."""
        return probs.get(self.name, torch.ones(1, device=device))

    def pick(self, sub: SubModel) -> int:
        """The channel count a sampled sub-model uses."""
        return self.channels[sub.get(self.name)]


class MixedBlock(nn.Module):
    """A searchable block holding the largest candidate's weights; candidates are slices of it."""

    expand: nn.Linear | nn.Conv1d | nn.Conv2d
    dw: nn.Conv1d | nn.Conv2d  # conv families only
    project: nn.Linear | nn.Conv1d | nn.Conv2d
    bn1: nn.BatchNorm1d | nn.BatchNorm2d
    bn2: nn.BatchNorm1d | nn.BatchNorm2d  # conv families only
    bn3: nn.BatchNorm1d | nn.BatchNorm2d
    kernel_masks: torch.Tensor  # buffers, registered in __init__ (kernel_masks: conv families only)
    channel_masks: torch.Tensor

    def __init__(
        self,
        family: str,
        index: int,
        spec: BlockSpec,
        arch: dict[str, Choice],
        widths: tuple[StageWidth, StageWidth],
    ) -> None:
        super().__init__()
        self.family, self.spec, self.prefix = family, spec, f"b{index}."
        self.width_in, self.width_out = widths
        self.dims = 2 if family == "conv2d" else 1
        self.kernels = tuple(int(k) for k in _values(arch, self.prefix + "kernel", (0,)))
        self.expansions = tuple(int(e) for e in _values(arch, self.prefix + "expansion", (1,)))
        self.depths = tuple(str(d) for d in _values(arch, self.prefix + "depth", ("keep",)))
        hidden, kmax = spec.in_ch * max(self.expansions), max(self.kernels)
        if family == "mlp":
            self.expand, self.bn1 = (
                nn.Linear(spec.in_ch, hidden, bias=False),
                nn.BatchNorm1d(hidden),
            )
            self.project, self.bn3 = (
                nn.Linear(hidden, spec.out_ch, bias=False),
                nn.BatchNorm1d(spec.out_ch),
            )
        else:
            self.expand, self.bn1 = conv_bn(self.dims, spec.in_ch, hidden, 1)
            self.dw, self.bn2 = conv_bn(self.dims, hidden, hidden, kmax, spec.stride, groups=hidden)
            self.project, self.bn3 = conv_bn(self.dims, hidden, spec.out_ch, 1)
            self.register_buffer("kernel_masks", self._kernel_masks(kmax), persistent=False)
        channel = torch.arange(hidden)
        # [input widths, expansions, hidden]: the hidden channels of every (input width, expansion)
        masks = torch.stack(
            [
                torch.stack(
                    [(channel < cin * e).to(torch.get_default_dtype()) for e in self.expansions]
                )
                for cin in self.width_in.channels
            ]
        )
        self.register_buffer("channel_masks", masks, persistent=False)
        self.register_buffer("out_masks", self.width_out.masks(), persistent=False)

    def _kernel_masks(self, kmax: int) -> torch.Tensor:
        pos = torch.arange(kmax)
        masks = []
        for k in self.kernels:
            lo = (kmax - k) // 2
            line = ((pos >= lo) & (pos < lo + k)).to(torch.get_default_dtype())
            masks.append(line if self.dims == 1 else line[:, None] * line[None, :])
        return torch.stack(masks)

    def forward(self, x: torch.Tensor, probs: Arch) -> torch.Tensor:
        """The encoding-weighted mixture of every candidate of this block (or one sampled candidate)."""
        if isinstance(probs, SubModel):
            return self._forward_sub(x, probs)
        p_exp = probs.get(self.prefix + "expansion", torch.ones(1, device=x.device))
        p_in = self.width_in.probs(probs, x.device)
        hidden = torch.einsum("w,e,weh->h", p_in, p_exp, self.channel_masks)
        out_mask = torch.tensordot(self.width_out.probs(probs, x.device), self.out_masks, 1)
        if self.family == "mlp":
            h = F.relu(self.bn1(self.expand(x))) * hidden
            y: torch.Tensor = self.bn3(self.project(h)) * out_mask
        else:
            p_kernel = probs.get(self.prefix + "kernel", torch.ones(1, device=x.device))
            kernel = self.dw.weight * torch.tensordot(p_kernel, self.kernel_masks, 1)
            conv = F.conv1d if self.dims == 1 else F.conv2d
            h = F.relu6(self.bn1(self.expand(x)))
            h = conv(h, kernel, None, self.spec.stride, self.dw.padding, 1, self.dw.groups)
            h = F.relu6(self.bn2(h)) * hidden.view(1, -1, *([1] * self.dims))
            y = self.bn3(self.project(h)) * out_mask.view(1, -1, *([1] * self.dims))
        if not self.spec.residual:
            return y
        p_keep = self._p_keep(probs)
        return x + (y if p_keep is None else p_keep * y)

    def _forward_sub(self, x: torch.Tensor, sub: SubModel) -> torch.Tensor:
        """The sampled candidate alone, on slices of the shared weights."""
        depth = self.prefix + "depth"
        if self.spec.residual and depth in sub.picks and self.depths[sub.get(depth)] == "skip":
            return x
        cin, cout = self.width_in.pick(sub), self.width_out.pick(sub)
        hid = cin * self.expansions[sub.get(self.prefix + "expansion")]
        if self.family == "mlp":
            h = F.relu(_bn(F.linear(x, self.expand.weight[:hid, :cin]), self.bn1, hid))
            y = _bn(F.linear(h, self.project.weight[:cout, :hid]), self.bn3, cout)
        else:
            k = self.kernels[sub.get(self.prefix + "kernel")]
            lo = (max(self.kernels) - k) // 2
            conv = F.conv1d if self.dims == 1 else F.conv2d
            taps = self.dw.weight[:hid, :, lo : lo + k]
            if self.dims == 2:
                taps = taps[..., lo : lo + k]
            h = F.relu6(_bn(conv(x, self.expand.weight[:hid, :cin]), self.bn1, hid))
            h = conv(h, taps, None, self.spec.stride, k // 2, 1, hid)
            h = F.relu6(_bn(h, self.bn2, hid))
            y = _bn(conv(h, self.project.weight[:cout, :hid]), self.bn3, cout)
        return x + y if self.spec.residual else y

    def expected_params(self, probs: Probs) -> torch.Tensor:
        """Expected parameter count of this block under the architecture encoding."""
        return self.expected(probs, partial(block_params, self.family))

    def expected(self, probs: Probs, cost: Callable[[int, int, Any, Any], Any]) -> torch.Tensor:
        """Expectation under the encoding of `cost(cin, cout, taps, hidden)`, a cost bilinear in
        (taps, hidden): exact for independent choices."""
        device = self.channel_masks.device
        p_exp = probs.get(self.prefix + "expansion", torch.ones(1, device=device))
        expansion = (p_exp * torch.tensor(self.expansions, dtype=p_exp.dtype, device=device)).sum()
        taps = torch.zeros((), device=device)
        if self.family != "mlp":
            p_kernel = probs.get(self.prefix + "kernel", torch.ones(1, device=device))
            areas = torch.tensor(
                [k**self.dims for k in self.kernels], dtype=p_kernel.dtype, device=device
            )
            taps = (p_kernel * areas).sum()
        total = torch.zeros((), device=device)
        for p, cin, cout in self._width_pairs(probs, device):
            total = total + p * cost(cin, cout, taps, cin * expansion)
        p_keep = self._p_keep(probs)
        return total if p_keep is None else p_keep * total

    def _p_keep(self, probs: Probs) -> torch.Tensor | None:
        """The probability that this block runs (None: no depth choice, it always runs)."""
        p_depth = probs.get(self.prefix + "depth")
        if p_depth is None:
            return None
        keep = [i for i, d in enumerate(self.depths) if d == "keep"]
        return p_depth[keep].sum() if keep else p_depth.sum() * 0.0  # a ("skip",) choice never runs

    def _width_pairs(
        self, probs: Probs, device: torch.device
    ) -> list[tuple[torch.Tensor, int, int]]:
        """(probability, input channels, output channels) of every width combination of the block:
        one width for both ends inside a stage, independent widths across a stage boundary."""
        p_in = self.width_in.probs(probs, device)
        if self.width_in.name == self.width_out.name:
            return [(p_in[i], c, c) for i, c in enumerate(self.width_in.channels)]
        p_out = self.width_out.probs(probs, device)
        return [
            (p_in[i] * p_out[o], cin, cout)
            for i, cin in enumerate(self.width_in.channels)
            for o, cout in enumerate(self.width_out.channels)
        ]


def _bn(
    x: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm, channels: int | None = None
) -> torch.Tensor:
    """`bn` on the first `channels` channels (its running statistics are updated in place, as `bn` does)."""
    n = channels or bn.num_features
    mean, var = bn.running_mean, bn.running_var
    factor = bn.momentum or 0.0
    if bn.training and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:  # a cumulative average, as nn.BatchNorm keeps it
            factor = 1.0 / float(bn.num_batches_tracked)
    return F.batch_norm(
        x,
        None if mean is None else mean[:n],
        None if var is None else var[:n],
        bn.weight[:n],
        bn.bias[:n],
        bn.training,
        factor,
        bn.eps,
    )


class SuperNet(nn.Module):
    """Stem, mixed blocks, global pooling, classifier; `forward(x, probs)` mixes by the encodings."""

    norm_mean: torch.Tensor  # buffers, registered in __init__
    norm_std: torch.Tensor
    stem_masks: torch.Tensor

    def __init__(
        self,
        layout: Layout,
        arch: tuple[Choice, ...],
        input_shape: tuple[int, ...],
        num_classes: int,
    ) -> None:
        super().__init__()
        self.layout, family = layout, layout.family
        by_name = {c.name: c for c in arch}
        c_in = input_shape[0]
        norm_shape = (1, c_in) + (1,) * (len(input_shape) - 1) if family != "mlp" else (1, c_in)
        self.register_buffer("norm_mean", torch.zeros(norm_shape))
        self.register_buffer("norm_std", torch.ones(norm_shape))
        if family == "mlp":
            self.stem = nn.Sequential(
                nn.Linear(c_in, layout.stem_ch, bias=False), bn_cls(1)(layout.stem_ch), nn.ReLU()
            )
        else:
            dims = 1 if family == "conv1d" else 2
            self.stem = nn.Sequential(
                *conv_bn(dims, c_in, layout.stem_ch, layout.stem_kernel, layout.stem_stride),
                nn.ReLU6(),
            )
        self.widths = [
            StageWidth.of(s, widest, by_name) for s, widest in enumerate(layout.stage_channels)
        ]
        self.register_buffer("stem_masks", self.widths[0].masks(), persistent=False)
        self.blocks = nn.ModuleList(
            MixedBlock(family, j, s, by_name, (self.widths[a], self.widths[b]))
            for j, (s, (a, b)) in enumerate(zip(layout.blocks, layout.block_stages, strict=True))
        )
        width = layout.blocks[-1].out_ch if layout.blocks else layout.stem_ch
        self.pool_dims = tuple(range(2, len(input_shape) + 1)) if family != "mlp" else ()
        self.classifier = nn.Linear(width, num_classes)
        self.num_classes, self.c_in = num_classes, c_in
        self.stem_taps = 1 if family == "mlp" else layout.stem_kernel ** (len(input_shape) - 1)
        self.input_shape = tuple(input_shape)
        self.positions = block_positions(layout, input_shape)
        self.stem_positions = stem_positions(layout, input_shape)

    def forward(self, x: torch.Tensor, probs: Arch) -> torch.Tensor:
        """Logits of the combined model mixed by the architecture encoding `probs` (or of a `SubModel`)."""
        h = self._stem((x - self.norm_mean) / self.norm_std, probs)
        for block in self.blocks:
            h = block(h, probs)
        pooled = h.mean(dim=self.pool_dims) if self.pool_dims else h
        if isinstance(probs, SubModel):  # the sub-model's own classifier columns
            return F.linear(
                pooled, self.classifier.weight[:, : pooled.shape[1]], self.classifier.bias
            )
        logits: torch.Tensor = self.classifier(pooled)
        return logits

    def _stem(self, x: torch.Tensor, probs: Arch) -> torch.Tensor:
        """The stem, its output channels masked by the first stage's width (or sliced to it)."""
        conv, bn = self.stem[0], self.stem[1]
        if isinstance(probs, SubModel):
            assert isinstance(bn, nn.modules.batchnorm._BatchNorm)  # the stem is (layer, bn, act)
            c0 = self.widths[0].pick(probs)
            if self.layout.family == "mlp":
                assert isinstance(conv, nn.Linear)
                return F.relu(_bn(F.linear(x, conv.weight[:c0]), bn, c0))
            assert isinstance(conv, nn.Conv1d | nn.Conv2d)
            dims = x.dim() - 2
            conv_fn = F.conv1d if dims == 1 else F.conv2d
            h = conv_fn(x, conv.weight[:c0], None, conv.stride, conv.padding)
            return F.relu6(_bn(h, bn, c0))
        stem: torch.Tensor = self.stem(x)
        mask = torch.tensordot(self.widths[0].probs(probs, x.device), self.stem_masks, 1)
        masked: torch.Tensor = stem * mask.view(1, -1, *([1] * (stem.dim() - 2)))
        return masked

    def _mixed_blocks(self) -> Iterator[MixedBlock]:
        """The blocks, typed (`nn.ModuleList` yields plain modules)."""
        for block in self.blocks:
            assert isinstance(block, MixedBlock)
            yield block

    def expected_params(self, probs: Probs) -> torch.Tensor:
        """Expected parameter count of the derived model under the encoding (the cost penalty)."""
        blocks = sum(block.expected_params(probs) for block in self._mixed_blocks())
        assert isinstance(blocks, torch.Tensor), "every layout has blocks"
        device = blocks.device
        first, last = self.widths[0], self.widths[-1]
        c0 = (first.probs(probs, device) * torch.tensor(first.channels, device=device)).sum()
        c_last = (last.probs(probs, device) * torch.tensor(last.channels, device=device)).sum()
        stem = c0 * (self.c_in * self.stem_taps + 2)
        return blocks + stem + c_last * self.num_classes + self.num_classes

    def expected_flops(self, probs: Probs) -> torch.Tensor:
        """Expected FLOPs (multiply-accumulates, `costs.count_flops`) of the derived model."""
        family, blocks = self.layout.family, []
        for block, where in zip(self._mixed_blocks(), self.positions, strict=True):
            blocks.append(block.expected(probs, partial(block_flops, family, positions=where)))
        total = torch.stack(blocks).sum()
        device = total.device
        first, last = self.widths[0], self.widths[-1]
        c0 = (first.probs(probs, device) * torch.tensor(first.channels, device=device)).sum()
        c_last = (last.probs(probs, device) * torch.tensor(last.channels, device=device)).sum()
        stem = c0 * self.c_in * self.stem_taps * self.stem_positions
        return total + stem + c_last * self.num_classes


def child_state_dict(
    net: SuperNet, arch: dict[str, Any], model_args: ModelArgs
) -> dict[str, torch.Tensor]:
    """The sub-model `model_args` as a slice of the shared weights: a state dict for `ChildNet`.

    This is what makes every candidate architecture a sub-model of the SuperModel (weight sharing).
    """
    c0 = model_args["stem"]["channels"]
    c_last = model_args["blocks"][-1]["out"] if model_args["blocks"] else c0
    state = {k: v.clone() for k, v in net.state_dict().items() if k.startswith("norm_")}
    for key, value in net.stem.state_dict().items():
        state[f"stem.{key}"] = value.clone() if value.dim() == 0 else value[:c0].clone()
    state["classifier.weight"] = net.classifier.weight.detach()[:, :c_last].clone()
    state["classifier.bias"] = net.classifier.bias.detach().clone()
    kept = [j for j in range(len(net.blocks)) if arch.get(f"b{j}.depth", "keep") != "skip"]
    for i, (j, args) in enumerate(zip(kept, model_args["blocks"], strict=True)):
        block = net.blocks[j]
        pairs = [
            ("expand", 0),
            ("bn1", 1),
            ("project", 6 if block.family != "mlp" else 3),
            ("bn3", 7 if block.family != "mlp" else 4),
        ]
        if block.family != "mlp":
            pairs += [("dw", 3), ("bn2", 4)]
        for name, index in pairs:
            for key, value in getattr(block, name).state_dict().items():
                state[f"blocks.{i}.body.{index}.{key}"] = _slice(name, value, args)
    return state


def _slice(name: str, value: torch.Tensor, args: dict[str, Any]) -> torch.Tensor:
    """The part of one shared tensor of a block that the child block `args` uses."""
    cin, cout, kernel = args["in"], args["out"], args.get("kernel", 0)
    hidden = cin * args["expansion"]
    if value.dim() == 0:
        return value.clone()
    if name == "bn3":
        return value[:cout].clone()
    if name == "project":
        return value[:cout, :hidden].clone()
    if name == "expand":
        return value[:hidden, :cin].clone()
    value = value[:hidden]
    if name == "dw":
        lo = (value.shape[-1] - kernel) // 2
        value = value[..., lo : lo + kernel]
        if value.dim() == 4:
            value = value[:, :, lo : lo + kernel, :]
    return value.clone()
