"""The default search space per family and mode.

`joint` searches both; `nas` fixes the hyper-parameters (each choice keeps one basis, a standard
hand-picked setting); `hpo` fixes the architecture (one candidate per block). All three then run the
same code: a one-candidate choice has a constant encoding of 1.
"""

from __future__ import annotations

from functools import partial
from typing import TypedDict

from autohas_edge.server.search.augment import POLICIES
from autohas_edge.server.search.models import Layout, channels_at, width_name
from autohas_edge.server.search.pruning import smallest_of_each
from autohas_edge.server.search.space import CONTINUOUS, Choice, SearchSpace, Value


class FixedArch(TypedDict):
    """The per-block architecture that `hpo` mode keeps (expansion per family)."""

    kernel: int
    expansion: dict[str, int]
    depth: str


KERNELS = (3, 5, 7)
#: a stage's channels as fractions of the layout's widest: what makes small models reachable
WIDTHS = (0.5, 0.75, 1.0)
EXPANSIONS = {"conv1d": (1, 3, 6), "conv2d": (1, 3, 6), "mlp": (1, 2, 4)}
#: the architecture that `hpo` mode keeps fixed
FIXED_ARCH: FixedArch = {
    "kernel": 5,
    # mlp 1: inside the default 50k-parameter budget whatever the number of features up to ~200
    "expansion": {"conv1d": 3, "conv2d": 3, "mlp": 1},
    "depth": "keep",
}
#: SGD-equivalent rates (see hparams.LR_SCALE). A one-step look-ahead is biased towards small rates
#: (short-horizon bias), so the bases span only rates that train well at the retraining length.
LEARNING_RATES = (0.4, 0.15, 0.05)
WEIGHT_DECAYS = (1e-2, 1e-3, 1e-4)
OPTIMIZERS = ("sgd", "adam", "rmsprop")
LOSSES = ("ce", "ls0.1")
#: the hyper-parameters that `nas` mode keeps fixed
FIXED_HPARAMS: dict[str, Value] = {
    "learning_rate": 0.1,
    "weight_decay": 1e-3,
    "optimizer": "sgd",
    "loss": "ce",
}
FIXED_AUGMENT = {"signal": "shift_noise", "image": "shift_noise", "tabular": "noise"}


def arch_choices(layout: Layout, fixed: bool) -> tuple[Choice, ...]:
    """Per stage: its width; per block: kernel size (conv families), expansion ratio, and skip when
    the block is residual."""
    choices = []
    for j, spec in enumerate(layout.blocks):
        if layout.family != "mlp":
            kernels = (FIXED_ARCH["kernel"],) if fixed else KERNELS
            choices.append(Choice(f"b{j}.kernel", kernels))
        expansions = (
            (FIXED_ARCH["expansion"][layout.family],) if fixed else EXPANSIONS[layout.family]
        )
        choices.append(Choice(f"b{j}.expansion", expansions))
        if spec.residual and not fixed:
            choices.append(Choice(f"b{j}.depth", ("keep", "skip")))
    if not fixed:
        for s, widest in enumerate(layout.stage_channels):
            fractions = smallest_of_each(WIDTHS, partial(channels_at, widest))
            if len(fractions) > 1:  # a stage too narrow to thin has no width choice
                choices.append(Choice(width_name(s), fractions))
    return tuple(choices)


def hparam_choices(modality: str, fixed: bool) -> tuple[Choice, ...]:
    """Learning rate and weight decay (continuous bases), optimizer, loss and augmentation policy."""
    # "none" stays available for custom spaces but is not a default basis: one look-ahead step cannot
    # see the multi-step benefit of augmentation, so the search can only choose among real policies
    policies = POLICIES[modality][1:]
    if fixed:
        return (
            Choice("learning_rate", (FIXED_HPARAMS["learning_rate"],), CONTINUOUS),
            Choice("weight_decay", (FIXED_HPARAMS["weight_decay"],), CONTINUOUS),
            Choice("optimizer", (FIXED_HPARAMS["optimizer"],)),
            Choice("loss", (FIXED_HPARAMS["loss"],)),
            Choice("augment", (FIXED_AUGMENT[modality],)),
        )
    return (
        Choice("learning_rate", LEARNING_RATES, CONTINUOUS),
        Choice("weight_decay", WEIGHT_DECAYS, CONTINUOUS),
        Choice("optimizer", OPTIMIZERS),
        Choice("loss", LOSSES),
        Choice("augment", policies),
    )


def default_space(layout: Layout, modality: str, mode: str) -> SearchSpace:
    """The search space for `mode` ("joint", "nas" or "hpo")."""
    return SearchSpace(
        arch_choices(layout, fixed=mode == "hpo"), hparam_choices(modality, fixed=mode == "nas")
    )
