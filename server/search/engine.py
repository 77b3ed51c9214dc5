"""The differentiable search: alternates first and second iterations, records the trajectory, and
knows when to stop. Its whole state round-trips through `state_dict` for exact resumption."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch.profiler import record_function

from autohas_edge.server.search import hparams as hp
from autohas_edge.server.search.config import SearchConfig
from autohas_edge.server.search.distributed import Comm
from autohas_edge.server.search.iterations import (
    HPMix,
    augmented_chunks,
    chunk_gradients,
    combine_explicit,
    combine_fast,
    first_iteration,
    validation_objective,
)
from autohas_edge.server.search.latency import LatencyTable, cached_table
from autohas_edge.server.search.space import SearchSpace
from autohas_edge.server.search.supernet import SuperNet
from autohas_edge.server.search.weights import FlatWeights
from autohas_edge.server.search.window import (
    Window,
    bases,
    window_step,
    window_weights,
    window_weights_explicit,
)


@dataclass
class Batches:
    """Training and validation tensors on the search device, sampled with an explicit generator."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    scale: float
    gen: torch.Generator

    def train(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A random training batch."""
        idx = torch.randint(len(self.x_train), (n,), generator=self.gen, device=self.x_train.device)
        return self.x_train[idx], self.y_train[idx]

    def val(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A random validation batch (the whole validation split when `n` covers it)."""
        if n >= len(self.x_val):
            return self.x_val, self.y_val
        idx = torch.randint(len(self.x_val), (n,), generator=self.gen, device=self.x_val.device)
        return self.x_val[idx], self.y_val[idx]


@dataclass
class StepStats:
    """What one step reports."""

    step: int
    train_loss: float
    val_loss: float
    learning_rate: float
    grad_norm: float


@dataclass
class History:
    """Per-step records: the learning-rate trajectory, losses and encodings (for the plot)."""

    lr: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    encodings: list[dict[str, list[float]]] = field(default_factory=list)


def cost_penalty(expected: torch.Tensor, budget: float) -> torch.Tensor:
    """The resource term of the validation objective: relative expected cost above the budget.

    Zero inside the budget on purpose: the encodings are updated with Adam, which normalises gradient
    scale, so any always-on size pressure, however small its weight, eventually outvotes the noisy
    validation signal and collapses every block to its smallest candidate.
    """
    return torch.relu(expected / budget - 1.0)


class Searcher:
    """Differentiable AutoHAS: shared weights W in `net`, logits for every choice of `space`.

    With several workers (`comm`), each rank does its share of every batch and the gradients of W and of
    the encodings are averaged across ranks, so all ranks keep identical weights and encodings.
    """

    def __init__(
        self,
        net: SuperNet,
        space: SearchSpace,
        batches: Batches,
        config: SearchConfig,
        comm: Comm | None = None,
    ) -> None:
        self.net, self.space, self.batches, self.config = net, space, batches, config
        self.comm = comm or Comm()
        self.batch_size = self.comm.share(config.batch_size, minimum=8)
        self.encoding_batch_size = self.comm.share(config.encoding_batch_size, minimum=8)
        self.flat = FlatWeights(net)
        device = self.flat.params[0].device
        self.opt_state = hp.init_state(space.hparam("optimizer").labels, self.flat.get())
        self.logits = {
            c.name: torch.zeros(len(c), device=device, requires_grad=True) for c in space.choices
        }
        self.encoding_opt = torch.optim.Adam(
            self.logits.values(), lr=config.encoding_lr, betas=(0.5, 0.999)
        )
        self.step_index = 0
        self.history = History()
        self.stop_reason = ""
        #: the second iteration's look-ahead in steps (0: the one-step form); see `window`
        self.horizon = config.window_steps
        self.window: Window | None = None
        #: the per-candidate latency table when a latency budget is set (measured once, cached)
        self.latency: LatencyTable | None = None
        if config.max_latency_ms > 0:
            self.latency = cached_table(space, net.layout, net.input_shape, net.num_classes)

    def probabilities(self) -> dict[str, torch.Tensor]:
        """Softmax of every choice's logits (differentiable)."""
        return {name: torch.softmax(logit, 0) for name, logit in self.logits.items()}

    def encodings(self) -> dict[str, dict[str, float]]:
        """choice -> candidate label -> probability."""
        probs = self.probabilities()
        return {
            c.name: dict(zip(c.labels, probs[c.name].tolist(), strict=True))
            for c in self.space.choices
        }

    def _arch(self, probs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {c.name: probs[c.name] for c in self.space.arch}

    def chunks(self, size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A training batch as one augmented chunk per augmentation basis (`augment_examples`)."""
        with record_function("search.data_and_augmentation"):
            x, y = self.batches.train(size)
            policies = tuple(str(p) for p in self.space.hparam("augment").candidates)
            same = self.config.augment_examples == "same"
            return augmented_chunks(x, y, policies, self.batches.scale, self.batches.gen, same)

    def step(self) -> StepStats:
        """One first iteration, then (after warm-up) one second iteration, worker sync, the record.

        A strategy changes the two iterations only: `train_weights` and `second_iteration` are the
        extension points (the controller strategy overrides both); the rest is shared.
        """
        with torch.no_grad():
            probs = self.probabilities()
        train_loss, lr = self.train_weights(probs)
        val_loss = grad_norm = math.nan
        if self.step_index >= self.config.warmup_steps and self.encodings_due():
            val_loss, grad_norm = self.second_iteration()
        self._sync_buffers()
        stats = StepStats(self.step_index, self.comm.mean(train_loss), val_loss, lr, grad_norm)
        self._record(stats)
        self.step_index += 1
        return stats

    def train_weights(self, probs: dict[str, torch.Tensor]) -> tuple[float, float]:
        """The first iteration: update W on the mixed model with encoding-combined HPs; returns the
        training loss and the learning rate used."""
        mix = HPMix.from_probs(self.space, probs)
        chunks = self.chunks(self.batch_size)
        update: Callable[..., float] = first_iteration
        if self.horizon and self.step_index >= self.config.warmup_steps:
            if self.window is None:
                self.window = Window.open(self.flat.get(), bases(self.space))
            update = partial(window_step, window=self.window)  # feeds the window as it goes
        with record_function("search.first_iteration"):
            train_loss = update(
                self.net,
                self.flat,
                self.opt_state,
                chunks,
                self._arch(probs),
                mix,
                self.config.grad_clip,
                reduce=self.comm.mean_,
            )
        return train_loss, float(mix.lr)

    def _sync_buffers(self) -> None:
        """Average batch-norm running statistics across workers (each saw its own batches)."""
        if self.comm.active:
            with record_function("search.all_reduce"):
                buffers = [b for name, b in self.net.named_buffers() if "running_" in name]
                self._mean_in_place(buffers)

    def _mean_in_place(self, tensors: list[torch.Tensor]) -> None:
        """Average tensors across workers with one all-reduce."""
        flat = self.comm.mean_(torch.cat([t.reshape(-1) for t in tensors]))
        with torch.no_grad():
            for t, part in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
                t.copy_(part.view_as(t))

    def apply_encoding_gradient(self, objective: torch.Tensor) -> float:
        """One Adam step of the encodings on `objective`, gradients averaged over workers; the grad norm."""
        self.encoding_opt.zero_grad()
        objective.backward()
        grads = []
        for name, logit in self.logits.items():
            if logit.grad is None:
                raise RuntimeError(f"the search objective does not depend on the {name!r} encoding")
            grads.append(logit.grad)
        if self.comm.active:
            self._mean_in_place(grads)
        grad_norm = math.sqrt(sum(float((g**2).sum()) for g in grads))
        self.encoding_opt.step()
        return grad_norm

    def encodings_due(self) -> bool:
        """Whether this step (after warm-up) ends with a second iteration: every step in the one-step
        form, once a window is `horizon` steps long in the windowed form."""
        return not self.horizon or (self.window is not None and self.window.steps >= self.horizon)

    def second_iteration(self) -> tuple[float, float]:
        """Temporary weights per HP basis, combined by P^H; validation loss; update both encodings.

        In the windowed form the temporary weights are the window's K-step ones, the validation batch
        is K times as large (at most the whole split), and the next window opens afterwards.
        """
        cfg = self.config
        probs = self.probabilities()
        mix, arch = HPMix.from_probs(self.space, probs), self._arch(probs)
        w_prime = self._combined_weights(arch, mix)
        with record_function("search.validation_forward"):
            x_val, y_val = self.batches.val(self.encoding_batch_size * max(1, self.horizon))
            val_loss = validation_objective(self.net, self.flat, w_prime, x_val, y_val, arch)
            penalty = cfg.cost_weight * self.budget_penalty(arch)
        with record_function("search.encoding_update"):
            grad_norm = self.apply_encoding_gradient(val_loss + penalty)
        self.window = None
        return self.comm.mean(float(val_loss.detach())), grad_norm

    def budget_penalty(self, arch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The sum of `cost_penalty` over the budgets set: parameters, FLOPs, latency."""
        cfg, net = self.config, self.net
        penalty = cost_penalty(net.expected_params(arch), cfg.max_params)
        if cfg.max_flops > 0:
            penalty = penalty + cost_penalty(net.expected_flops(arch), cfg.max_flops)
        if self.latency is not None:
            penalty = penalty + cost_penalty(self.latency.expected(arch), cfg.max_latency_ms)
        return penalty

    def _combined_weights(self, arch: dict[str, torch.Tensor], mix: HPMix) -> torch.Tensor:
        """W' = sum_b P_b W_b over one-step temporary weights, by the configured path."""
        cfg = self.config
        if self.window is not None:
            if cfg.weights_path == "explicit":
                return window_weights_explicit(self.window, self.space, mix)[0]
            return window_weights(self.window, mix)
        chunks = self.chunks(self.encoding_batch_size)
        if cfg.weights_path == "explicit":
            args = (
                self.net,
                self.flat,
                chunks,
                arch,
                self.opt_state,
                self.space,
                mix,
                cfg.grad_clip,
            )
            return combine_explicit(*args, reduce=self.comm.mean_)[0]
        losses = [str(v) for v in self.space.hparam("loss").candidates]
        with record_function("search.temporary_weights"):
            # all workers build the same W' from the whole batch's gradients, as one worker would
            grads, _ = chunk_gradients(
                self.net, self.flat, chunks, arch, losses, cfg.grad_clip, reduce=self.comm.mean_
            )
            return combine_fast(self.flat.get(), grads, self.opt_state, mix)

    def _record(self, stats: StepStats) -> None:
        self.history.lr.append(stats.learning_rate)
        self.history.train_loss.append(stats.train_loss)
        self.history.val_loss.append(stats.val_loss)
        self.history.encodings.append(
            {k: [round(p, 5) for p in v.values()] for k, v in self.encodings().items()}
        )
        self._check_stop(stats)

    def _check_stop(self, stats: StepStats) -> None:
        """Encodings settled (change below tolerance) or encoding gradient below tolerance."""
        cfg, t = self.config, len(self.history.encodings)
        if stats.step < cfg.warmup_steps:
            return
        if cfg.grad_tol > 0 and stats.grad_norm < cfg.grad_tol:
            self.stop_reason = f"encoding gradient norm {stats.grad_norm:.2e} < {cfg.grad_tol}"
        span = self.check_span()
        if cfg.encoding_tol > 0 and t - cfg.warmup_steps > span and t % span == 0:
            now, then = self.history.encodings[-1], self.history.encodings[-1 - span]
            change = max(abs(a - b) for k in now for a, b in zip(now[k], then[k], strict=True))
            if change < cfg.encoding_tol:
                self.stop_reason = (
                    f"encodings changed by {change:.1e} < {cfg.encoding_tol} in {span} steps"
                )

    def check_span(self) -> int:
        """Steps over which the encodings must have settled: `check_every`, rounded up to whole
        windows (the encodings move once per window)."""
        every = self.config.check_every
        return every if not self.horizon else self.horizon * math.ceil(every / self.horizon)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this search is."""
        return {
            "net": self.net.state_dict(),
            "opt_state": self.opt_state,
            "logits": {k: v.detach().clone() for k, v in self.logits.items()},
            "encoding_opt": self.encoding_opt.state_dict(),
            "gen": self.batches.gen.get_state(),
            "step": self.step_index,
            "history": self.history.__dict__,
            "stop_reason": self.stop_reason,
            "window": None if self.window is None else self.window.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from `state_dict()`."""
        self.net.load_state_dict(state["net"])
        for key, value in state["opt_state"].items():
            self.opt_state[key] = value.to(self.opt_state[key].device, copy=True)
        with torch.no_grad():
            for name, value in state["logits"].items():
                self.logits[name].copy_(value)
        self.encoding_opt.load_state_dict(state["encoding_opt"])
        self.batches.gen.set_state(state["gen"])
        self.step_index = int(state["step"])
        self.history = History(**state["history"])
        self.stop_reason = state["stop_reason"]
        window = state.get("window")
        device = self.flat.params[0].device
        self.window = None if window is None else Window.from_state(window, device)
