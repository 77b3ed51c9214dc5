"""The controller variant: the same logits *sample* (architecture, HP basis) pairs instead of mixing.

Each sampled pair's quality is the validation accuracy of temporary weights W* = one step from W with
the sampled HPs on the sampled sub-model (W itself is untouched: the temporary weights keep the shared
update clean); the rewards drive a REINFORCE update of the logits with a moving-average baseline and an
entropy bonus. W is trained on a sampled sub-model's training loss with the encoding-combined HPs.
Several pairs per step are averaged to reduce variance. A sampled sub-model runs on its own slices of
the shared weights (`SubModel`), so a step costs a sampled candidate's time and memory, not the
largest candidate's as in mixing.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.profiler import record_function

from autohas_edge.server.search import hparams as hp
from autohas_edge.server.search.augment import augment
from autohas_edge.server.search.config import SearchConfig
from autohas_edge.server.search.distributed import Comm
from autohas_edge.server.search.engine import Batches, Searcher
from autohas_edge.server.search.iterations import HPMix, first_iteration
from autohas_edge.server.search.space import SearchSpace
from autohas_edge.server.search.supernet import SubModel, SuperNet
from autohas_edge.server.search.weights import autocast, clip, forward_with

BASELINE_DECAY = 0.9
ENTROPY_WEIGHT = 1e-3


def controller_objective(
    probs: dict[str, torch.Tensor],
    picks: list[dict[str, int]],
    rewards: list[float],
    baseline: float,
) -> torch.Tensor:
    """The loss whose gradient is the REINFORCE update of the controller, with an entropy bonus:
    ``-mean_i (r_i - b) log p(pick_i) - ENTROPY_WEIGHT * H(p)``, every choice sampled independently."""
    log_probs = [sum(torch.log(probs[name][i]) for name, i in pick.items()) for pick in picks]
    advantage = sum((r - baseline) * lp for r, lp in zip(rewards, log_probs, strict=True)) / len(
        rewards
    )
    entropy = sum(-(p * torch.log(p + 1e-12)).sum() for p in probs.values())
    objective = -advantage - ENTROPY_WEIGHT * entropy
    assert isinstance(objective, torch.Tensor), "a controller has choices and draws picks"
    return objective


class ReinforceSearcher(Searcher):
    """REINFORCE over the same search space, supernet and checkpoint format as `Searcher`: it
    overrides its two iterations (`train_weights`, `second_iteration`) and adds the reward baseline
    to its state."""

    def __init__(
        self,
        net: SuperNet,
        space: SearchSpace,
        batches: Batches,
        config: SearchConfig,
        comm: Comm | None = None,
    ) -> None:
        super().__init__(net, space, batches, config, comm)
        self.baseline = math.nan
        self.horizon = 0  # the controller scores one-step temporary weights every step

    def _sample(self, probs: dict[str, torch.Tensor]) -> dict[str, int]:
        return {
            name: int(torch.multinomial(p.detach().cpu(), 1, generator=self._cpu_gen()))
            for name, p in probs.items()
        }

    def _cpu_gen(self) -> torch.Generator:
        # draws stay reproducible: the seed is taken from the data generator, which is checkpointed
        seed = int(
            torch.randint(
                2**62, (1,), generator=self.batches.gen, device=self.batches.x_train.device
            )
        )
        return torch.Generator().manual_seed(seed)

    def train_weights(self, probs: dict[str, torch.Tensor]) -> tuple[float, float]:
        """Train W on a sampled sub-model with the encoding-combined HPs."""
        mix = HPMix.from_probs(self.space, probs)
        arch = self._sub_model(self._sample(probs))
        chunks = self.chunks(self.batch_size)
        with record_function("search.first_iteration"):
            train_loss = first_iteration(
                self.net,
                self.flat,
                self.opt_state,
                chunks,
                arch,
                mix,
                self.config.grad_clip,
                reduce=self.comm.mean_,
            )
        return train_loss, float(mix.lr)

    def second_iteration(self) -> tuple[float, float]:
        """Sample pairs, score their one-step temporary weights, and update the logits by REINFORCE.

        Every worker samples its share of the pairs; the baseline moves with the mean reward of all of
        them, so it stays the same on every rank.
        """
        probs = self.probabilities()
        x, y = self.batches.train(self.encoding_batch_size)
        x_val, y_val = self.batches.val(self.encoding_batch_size)
        picks = [self._sample(probs) for _ in range(self.comm.share(self.config.samples))]
        with record_function("search.temporary_weights"):
            rewards = [self._reward(p, x, y, x_val, y_val) for p in picks]
        mean_reward = self.comm.mean(sum(rewards) / len(rewards))
        baseline = mean_reward if math.isnan(self.baseline) else self.baseline
        with record_function("search.encoding_update"):
            objective = controller_objective(probs, picks, rewards, baseline)
            grad_norm = self.apply_encoding_gradient(objective)
        self.baseline = BASELINE_DECAY * baseline + (1 - BASELINE_DECAY) * mean_reward
        return 1.0 - mean_reward, grad_norm  # reported as the validation error

    def _sub_model(self, picks: dict[str, int]) -> SubModel:
        """The architecture part of a sampled pair (run on its own slices of the shared weights)."""
        return SubModel({c.name: picks[c.name] for c in self.space.arch})

    def _values(self, picks: dict[str, int]) -> dict[str, Any]:
        return {c.name: c.candidates[picks[c.name]] for c in self.space.hparams}

    def _reward(
        self,
        picks: dict[str, int],
        x: torch.Tensor,
        y: torch.Tensor,
        x_val: torch.Tensor,
        y_val: torch.Tensor,
    ) -> float:
        """Validation accuracy of W* = one step from W with the sampled HPs on the sampled sub-model."""
        values, arch = self._values(picks), self._sub_model(picks)
        xb = augment(x, str(values["augment"]), self.batches.scale, self.batches.gen)
        with autocast(xb.device):
            logits = forward_with(self.net, self.flat, None, xb, arch)
        ce, uniform = hp.per_example_losses(logits, y)
        grad = clip(
            self.flat.flat_grad(hp.basis_loss(ce, uniform, str(values["loss"])).mean()),
            self.config.grad_clip,
        )
        d, _ = hp.direction(str(values["optimizer"]), grad, self.opt_state)
        w = self.flat.get()
        lr, wd = float(values["learning_rate"]), float(values["weight_decay"])
        with torch.no_grad(), autocast(x_val.device):
            val_logits = forward_with(self.net, self.flat, w - lr * d - lr * wd * w, x_val, arch)
        return float((val_logits.argmax(1) == y_val).float().mean())

    def state_dict(self) -> dict[str, Any]:
        """`Searcher.state_dict` plus the reward baseline."""
        return {**super().state_dict(), "baseline": self.baseline}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""
        super().load_state_dict(state)
        self.baseline = float(state["baseline"])
