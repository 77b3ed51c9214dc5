"""`run_search`: search (resumable), derive, retrain, evaluate, and write the run directory."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autohas_edge.server.search import compact, derive, distributed, race
from autohas_edge.server.search.compact import Size
from autohas_edge.server.search.config import SearchConfig
from autohas_edge.server.search.costs import count_flops
from autohas_edge.server.search.data import Dataset, load_dataset
from autohas_edge.server.search.defaults import default_space
from autohas_edge.server.search.distributed import Comm
from autohas_edge.server.search.engine import Batches
from autohas_edge.server.search.hparams import LR_SCALE, validate_hparams
from autohas_edge.server.search.models import (
    LAYOUTS,
    ChildNet,
    build_model,
    count_params,
    model_args_for,
)
from autohas_edge.server.search.progress import (
    Progress,
    ProgressEvent,
    SearchCancelled,
    StopCheck,
)
from autohas_edge.server.search.pruning import prune_dead_candidates
from autohas_edge.server.search.race import Entry, Recipe, Split
from autohas_edge.server.search.retraining import accuracy, retrain
from autohas_edge.server.search.rundir import read_checkpoint, save_checkpoint, write_run
from autohas_edge.server.search.space import SearchSpace
from autohas_edge.server.search.strategies import Strategy, make_searcher
from autohas_edge.server.search.supernet import SuperNet

#: a resumed rank without a saved generator reseeds with its rank seed + this times the step
RESEED_STRIDE = 1_000_003


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    use_cuda = name == "cuda" or (name == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


def run_search(
    config: SearchConfig,
    out_dir: str | Path,
    on_progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> dict[str, Any]:
    """Search, derive, retrain and evaluate; write the run directory; return result.json's content.

    Resumes from `out_dir`'s search checkpoint when there is one. `on_progress(event)` is called each
    step; `should_stop()` returning True saves the checkpoint and raises `SearchCancelled`.

    Under `torchrun` with several workers (see `server.search.distributed`) every rank searches; rank 0
    alone reports progress, is asked `should_stop()`, writes files, retrains and returns the result;
    the other ranks return `{}`.
    """
    comm, device, created = distributed.setup(resolve_device(config.device))
    try:
        emit = (on_progress or (lambda event: None)) if comm.is_main else (lambda event: None)
        emit(ProgressEvent("load"))
        data = load_dataset(config.dataset, config.seed, config.layout, config.channels)
        stop = (should_stop or (lambda: False)) if comm.is_main else (lambda: False)
        space, dropped = _space(config, data)
        run = _Run(config, data, space, device, Path(out_dir), emit, stop, comm, dropped)
        if comm.is_main:
            run.out.mkdir(parents=True, exist_ok=True)
        searched = run.search()
        agreement = run.agreement(searched[0])
        return run.finish(searched, agreement) if comm.is_main else {}
    finally:
        distributed.teardown(created)


def _space(config: SearchConfig, data: Dataset) -> tuple[SearchSpace, dict[str, list[str]]]:
    """The configured (or default) space, validated for the data, without dead candidates (returned
    too: choice -> dropped labels), with a budget that some model meets."""
    layout = LAYOUTS[data.family]
    space = config.space or default_space(layout, data.modality, config.mode)
    validate_hparams(space.hparams, data.modality)
    space, dropped = prune_dead_candidates(space, layout, data.input_shape)
    smallest = derive.smallest_params(
        space, layout, data.input_shape, data.num_classes, config.max_skips
    )
    if smallest > config.max_params:
        raise ValueError(
            f"max_params={config.max_params} is below the smallest model in the search space "
            f"({smallest} parameters)"
        )
    if config.max_flops > 0:
        fewest = derive.smallest_cost(
            space,
            lambda a: count_flops(model_args_for(layout, data.input_shape, data.num_classes, a)),
            config.max_skips,
        )
        if fewest > config.max_flops:
            raise ValueError(
                f"max_flops={config.max_flops} is below the smallest model in the search space "
                f"({int(fewest)} FLOPs)"
            )
    return space, dropped


def _latency(args: dict[str, Any], config: SearchConfig) -> dict[str, float]:
    """The derived model's measured latency, when a latency budget asked for it."""
    if config.max_latency_ms <= 0:
        return {}
    from autohas_edge.server.search.latency import measure_latency_ms

    return {"latency_ms": round(measure_latency_ms(args), 4)}


def _tensors(
    x: np.ndarray, y: np.ndarray, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)


def norm_stats(
    x: np.ndarray, family: str, noise: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (per-feature for tabular data) mean and standard deviation of the training inputs.

    With `noise` > 0 each statistic is perturbed, seeded by `seed` (the same for every model of a
    search): the mean by Gaussian noise of `noise` times the channel's scale sqrt(mean^2 + std^2),
    the std by a factor exp(noise * N(0, 1)). Every artifact carries these buffers, so they then
    reveal no exact statistic of the training rows (a constant feature is no longer copied). This is
    obfuscation, not a differential-privacy guarantee; the server's minimum cohort makes them
    statistics over at least k users in the first place.
    """
    axes = (0,) if family == "mlp" else (0, *range(2, x.ndim))
    mean, std = x.mean(axis=axes, keepdims=True), x.std(axis=axes, keepdims=True)
    if noise > 0:
        rng = np.random.default_rng([seed, 0x4E0F])
        scale = np.sqrt(mean.astype(np.float64) ** 2 + std.astype(np.float64) ** 2)
        mean = (mean + noise * scale * rng.standard_normal(mean.shape)).astype(x.dtype)
        std = (std * np.exp(noise * rng.standard_normal(std.shape))).astype(x.dtype)
    return mean, std + 1e-6


def _set_norm(model: SuperNet | ChildNet, data: Dataset, config: SearchConfig) -> None:
    """Normalisation lives inside the model as buffers, so a device feeds raw data."""
    mean, std = norm_stats(data.x_train, data.family, config.norm_noise, config.seed)
    model.norm_mean.copy_(torch.as_tensor(mean.reshape(model.norm_mean.shape)))
    model.norm_std.copy_(torch.as_tensor(std.reshape(model.norm_std.shape)))


#: a final retraining shorter than this re-estimates its batch-norm statistics (`batchnorm`)
REESTIMATE_BELOW_STEPS = 500


@dataclass
class _Run:
    """One call of `run_search`: its inputs and the stages that use them."""

    config: SearchConfig
    data: Dataset
    space: SearchSpace
    device: torch.device
    out: Path
    emit: Progress
    should_stop: StopCheck
    comm: Comm = field(default_factory=Comm)
    dropped: dict[str, list[str]] = field(default_factory=dict)  # dead candidates left out

    def searcher(self) -> Strategy:
        """A fresh searcher: SuperModel, encodings and data on the device, all seeded."""
        torch.manual_seed(self.config.seed)
        data = self.data
        net = SuperNet(LAYOUTS[data.family], self.space.arch, data.input_shape, data.num_classes)
        _set_norm(net, data, self.config)
        gen = torch.Generator(self.device).manual_seed(self.comm.rank_seed(self.config.seed))
        batches = Batches(
            *_tensors(data.x_train, data.y_train, self.device),
            *_tensors(data.x_val, data.y_val, self.device),
            float(data.x_train.std()),
            gen,
        )
        return make_searcher(
            self.config.strategy, net.to(self.device), self.space, batches, self.config, self.comm
        )

    def search(self) -> tuple[Strategy, float]:
        """Run (or resume) the alternating loop; returns the searcher and its wall-clock seconds."""
        searcher, config = self.searcher(), self.config
        previous, done = self.resume(searcher)
        start = time.perf_counter()
        seconds = lambda: previous + time.perf_counter() - start  # noqa: E731
        while not done and searcher.step_index < config.steps:
            if config.max_search_seconds and seconds() >= config.max_search_seconds:
                searcher.stop_reason = f"time budget of {config.max_search_seconds:g} s"
            # every rank takes rank 0's decisions, so all leave the loop at the same step
            cancel, settled = self.comm.flags(self.should_stop(), bool(searcher.stop_reason))
            searcher.stop_reason = str(self.comm.from_main(searcher.stop_reason)) if settled else ""
            if settled:
                break
            if cancel:
                self.checkpoint(searcher, seconds(), done=False)
                raise SearchCancelled(
                    f"search cancelled at step {searcher.step_index}; rerun to resume"
                )
            s = searcher.step()
            self.emit(
                ProgressEvent(
                    "search",
                    s.step + 1,
                    config.steps,
                    s.train_loss,
                    s.val_loss,
                    s.learning_rate,
                    searcher.encodings(),
                )
            )
            if searcher.step_index % config.checkpoint_every == 0:
                self.checkpoint(searcher, seconds(), done=False)
        if not done:
            self.checkpoint(searcher, seconds(), done=True)
        return searcher, seconds() if not done else previous

    def resume(self, searcher: Strategy) -> tuple[float, bool]:
        """Restore rank 0's search.pt on every rank (only rank 0 reads files, so nodes need not share a
        file system); returns (seconds searched so far, done). A rank the checkpoint has no generator
        for (more workers than wrote it) gets a fresh stream of its own."""
        comm = self.comm
        state = read_checkpoint(self.out, self.config) if comm.is_main else None
        state = comm.from_main(state)
        if state is None:
            return 0.0, False
        searcher.load_state_dict(state["searcher"])  # restores rank 0's generator too
        rank_gens = state["rank_gens"]
        if comm.active and comm.rank < len(rank_gens):
            searcher.batches.gen.set_state(rank_gens[comm.rank])
        elif comm.active:
            seed = comm.rank_seed(self.config.seed) + RESEED_STRIDE * searcher.step_index
            searcher.batches.gen.manual_seed(seed)
        return float(state["search_seconds"]), bool(state["done"])

    def checkpoint(self, searcher: Strategy, seconds: float, done: bool) -> None:
        """Rank 0 writes search.pt, with every rank's data-sampling generator (all ranks must call)."""
        rank_gens = self.comm.gather(searcher.batches.gen.get_state().cpu())
        if self.comm.is_main:
            save_checkpoint(self.out, searcher, self.config, seconds, done, rank_gens)

    def agreement(self, searcher: Strategy) -> dict[str, Any] | None:
        """With several workers: how far apart the ranks' final encodings are (all ranks must call)."""
        if not self.comm.active:
            return None
        flat = [
            [p for probs in enc.values() for p in probs.values()]
            for enc in self.comm.gather(searcher.encodings())
        ]
        diff = max(abs(a - b) for other in flat[1:] for a, b in zip(flat[0], other, strict=True))
        return {
            "world_size": self.comm.world_size,
            "backend": self.comm.backend,
            "max_encoding_difference": diff,
        }

    def finish(
        self, searched: tuple[Strategy, float], workers: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Derive the output model, retrain it with the derived HPs, evaluate, write the run directory."""
        searcher, search_seconds = searched
        config, data, encodings = self.config, self.data, searcher.encodings()
        layout = LAYOUTS[data.family]
        latency = None
        if config.max_latency_ms > 0:  # the table the search used: measured once, then cached
            from autohas_edge.server.search.latency import cached_table

            latency = cached_table(self.space, layout, data.input_shape, data.num_classes)
        limits = derive.limits_for(
            config, self.space, layout, data.input_shape, data.num_classes, latency
        )
        arch, budget_moves = derive.derive_within(self.space, encodings, limits, config.max_skips)
        hparams = derive.derive_hparams(self.space, encodings)
        encoded_lr = float(hparams["learning_rate"])
        hparams["learning_rate"] = derive.derive_learning_rate(
            encoded_lr, searcher.history.lr, config.warmup_steps, config.lr_derivation
        )
        args = model_args_for(layout, data.input_shape, data.num_classes, arch)
        derived_pair = {k: hparams[k] for k in ("optimizer", "learning_rate")}
        entries, race_steps, race_seconds = self.race(lambda: self.fresh(args), hparams)
        if entries:
            best = race.winner(entries)
            hparams.update(optimizer=best.optimizer, learning_rate=best.learning_rate)
        sizes, compact_seconds = self.compare_sizes(arch, encodings, limits, hparams, entries)
        if sizes:
            arch = compact.pick(sizes, config.within_points).arch
            args = model_args_for(layout, data.input_shape, data.num_classes, arch)
        model = self.fresh(args)
        retrain_seconds = self.retrain(model, hparams, searcher.history.lr)
        self.emit(ProgressEvent("evaluate", config.retrain_steps, config.retrain_steps))
        result = {
            "architecture": arch,
            "hyperparameters": hparams,
            "encodings": encodings,
            "params": count_params(args),
            "flops": count_flops(args),
            "budget_moves": budget_moves,
            **_latency(args, config),
            "test_accuracy": accuracy(model, *_tensors(data.x_test, data.y_test, self.device)),
            "search_seconds": round(search_seconds, 2),
            "race_seconds": round(race_seconds, 2),
            "race": {
                "steps": race_steps,
                "derived": derived_pair,
                "entries": [e.to_json() for e in entries],
            },
            "compact": {
                "within_points": config.within_points,
                "steps": config.compact_length if sizes else 0,
                "sizes": [size.to_json() for size in sizes],
            },
            "compact_seconds": round(compact_seconds, 2),
            "retrain_seconds": round(retrain_seconds, 2),
            "search_steps": searcher.step_index,
            "stop_reason": searcher.stop_reason or "step budget",
            "retrain_steps": config.retrain_steps,
            "checkpoint": str(self.out / "search.pt"),
            "effective_learning_rate": float(hparams["learning_rate"])
            * LR_SCALE[str(hparams["optimizer"])],
            "dataset": data.describe(),
            "fine_tuning": derive.fine_tuning(hparams),
            "config": config.to_json(),
            "lr_trajectory": [round(v, 6) for v in searcher.history.lr],
            "encoded_learning_rate": encoded_lr,
            "model_args": args,
            "space": self.space.to_json(),
            "dropped_candidates": self.dropped,
            "mode": config.mode,
            "strategy": config.strategy,
            "device": str(self.device),
            "workers": workers or {"world_size": 1},
            "torch_threads": torch.get_num_threads(),
        }
        write_run(self.out, result, model, args, searcher, self.space)
        self.emit(
            ProgressEvent("done", config.retrain_steps, config.retrain_steps, encodings=encodings)
        )
        return result

    def fresh(self, args: dict[str, Any]) -> nn.Module:
        """An untrained derived model on the device, normalising by the training data."""
        model = build_model(args).to(self.device)
        _set_norm(model, self.data, self.config)
        return model

    def race(
        self, new_model: Callable[[], nn.Module], hparams: dict[str, Any]
    ) -> tuple[list[race.Entry], int, float]:
        """The training race (see `race`): its entries (none when off, with a single pair, or when
        not even `race.MIN_STEPS` steps fit `max_race_seconds`), steps per training and wall-clock
        seconds (timing the steps included)."""
        config = self.config
        pairs = race.candidates(self.space, hparams) if config.race_length else []
        if not pairs:
            return [], 0, 0.0
        start = time.perf_counter()
        split, recipe = self.race_split(), self.race_recipe(config.race_length)
        if config.max_race_seconds:
            timing = race.time_trainings(new_model, hparams, split, recipe)
            left = config.max_race_seconds - (time.perf_counter() - start)
            fit = race.fitted_steps(
                recipe.steps, len(pairs), timing.per_step, left, timing.per_training
            )
            recipe = replace(recipe, steps=fit)
            if not recipe.steps:
                return [], 0, time.perf_counter() - start
        entries = race.run_race(new_model, pairs, hparams, split, recipe, self.on_race_entry)
        return entries, recipe.steps, time.perf_counter() - start

    def race_split(self) -> Split:
        """The training and validation splits on the device, for race trainings."""
        data = self.data
        return race.Split(
            *_tensors(data.x_train, data.y_train, self.device),
            *_tensors(data.x_val, data.y_val, self.device),
            float(data.x_train.std()),
        )

    def race_recipe(self, steps: int) -> Recipe:
        """How race (and `within_points`) trainings run: `steps` long, seeded apart from the rest."""
        config = self.config
        return race.Recipe(steps, config.batch_size, config.grad_clip, config.seed + 2)

    def on_race_entry(self, done: int, total: int) -> None:
        """Progress after each race training; a cancelled job stops here."""
        if self.should_stop():
            raise SearchCancelled("training race cancelled; rerun to resume (search kept)")
        self.emit(ProgressEvent("race", done, total))

    def compare_sizes(
        self,
        derived: dict[str, Any],
        encodings: derive.Encodings,
        limits: list[derive.Limit],
        hparams: dict[str, Any],
        entries: list[Entry],
    ) -> tuple[list[Size], float]:
        """`within_points` (see `compact`): the derived architecture and its smaller variants, each
        trained by the race recipe with the race winner's hyper-parameters (the derived one's
        training is the race winner's, when the race ran that long), with wall-clock seconds;
        none when `within_points` is 0 or no smaller variant exists."""
        config, data = self.config, self.data
        steps = config.compact_length
        if not config.within_points or not steps:
            return [], 0.0
        start = time.perf_counter()
        layout = LAYOUTS[data.family]

        def args_of(arch: dict[str, Any]) -> dict[str, Any]:
            return model_args_for(layout, data.input_shape, data.num_classes, arch)

        def params(arch: dict[str, Any]) -> int:
            return count_params(args_of(arch))

        smaller = compact.smaller_archs(
            self.space, encodings, limits, params, derived, config.max_skips
        )
        if not smaller:
            return [], time.perf_counter() - start
        split, recipe = self.race_split(), self.race_recipe(steps)
        sizes: list[Size] = []
        best = race.winner(entries) if entries else None
        if best is not None and best.steps == steps:  # the same training: race.train is seeded
            sizes.append(compact.Size(derived, params(derived), best.val_accuracy, best.val_loss))
        for arch in [derived, *smaller][len(sizes) :]:
            model = race.train(partial(self.fresh, args_of(arch)), hparams, split, recipe)
            sizes.append(compact.Size(arch, params(arch), *race.validate(model, split)))
            self.on_race_entry(len(sizes), len(smaller) + 1)
        return sizes, time.perf_counter() - start

    def retrain(self, model: nn.Module, hparams: dict[str, Any], searched: list[float]) -> float:
        """Retrain on training + validation data (`searched`: the search's learning-rate trajectory,
        followed with `retrain_schedule="searched"`); returns wall-clock seconds."""
        config, data = self.config, self.data
        x, y = (
            np.concatenate([data.x_train, data.x_val]),
            np.concatenate([data.y_train, data.y_val]),
        )
        torch.manual_seed(config.seed + 1)
        gen = torch.Generator(self.device).manual_seed(config.seed + 1)

        def on_step(step: int, loss: float, lr: float) -> None:
            if self.should_stop():
                raise SearchCancelled(
                    f"retraining cancelled at step {step}; rerun to resume (search kept)"
                )
            total = config.retrain_steps
            self.emit(ProgressEvent("retrain", step + 1, total, train_loss=loss, learning_rate=lr))

        start = time.perf_counter()
        retrain(
            model,
            *_tensors(x, y, self.device),
            hparams,
            config.retrain_steps,
            config.batch_size,
            float(data.x_train.std()),
            gen,
            config.grad_clip,
            on_step,
            schedule=searched if config.retrain_schedule == "searched" else None,
            # only short retrainings: after a long one the moving averages have caught up, and
            # re-estimated statistics made the demo's int8 TFLite artifact (1000 steps) lose 1.25
            # points against float (the bound is 1); see docs/method.md
            reestimate_bn=config.retrain_steps < REESTIMATE_BELOW_STEPS,
        )
        return time.perf_counter() - start
