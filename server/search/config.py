"""`SearchConfig`: every setting of one search, frozen, validated, with a JSON round trip."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from autohas_edge.server.search.layout import check_layout
from autohas_edge.server.search.space import SearchSpace
from autohas_edge.server.search.strategies import REGISTRY

MODES = ("joint", "nas", "hpo")
STRATEGIES = tuple(REGISTRY)  # the built-in strategies
WEIGHT_PATHS = ("fast", "explicit")
#: the differentiable search's hyper-parameter signal: temporary weights `horizon` steps long, taken
#: along W's own trajectory (`window`), or one temporary step from W every step (`one-step`, the
#: patent's literal form, kept as the ablation)
HP_SIGNALS = ("window", "one-step")
#: which examples the augmentation bases see in a step: the same ones, each basis applying itself to
#: them (`same`: their signals differ by the augmentation alone), or a part of the batch each
#: (`split`: every example once per step, but each basis judged on other examples)
AUGMENT_EXAMPLES = ("same", "split")
DEVICES = ("auto", "cpu", "cuda")
#: how retraining moves the learning rate: warm-up + cosine around the derived rate, or the
#: trajectory of E[lr] the search recorded (claim: a searched schedule), stretched to the retraining
SCHEDULES = ("cosine", "searched")
#: which learning rate the derived model trains with (see `derive.derive_learning_rate`)
LR_DERIVATIONS = ("peak", "encoding")
#: race_steps=-1: each race training is a twentieth of the retraining, at least 20 steps (or the
#: whole retraining, if shorter): ten pairs, halved (`race.rungs`), then cost about a third of one
AUTO_RACE_DIVISOR, AUTO_RACE_MIN = 20, 20
#: settings that change only the retraining, so a finished search may be retrained under new ones
RETRAIN_ONLY = (
    "retrain_steps",
    "retrain_schedule",
    "lr_derivation",
    "race_steps",
    "max_race_seconds",
    "within_points",
    "plot",
)


@dataclass(frozen=True)
class SearchConfig:
    """One search: dataset, mode (`joint|nas|hpo`), strategy, budgets, seed and device."""

    dataset: str = "mnist1d"
    layout: str = "auto"  # tabular, signal or image (auto: the .npz's, else guessed; see `layout`)
    channels: str = ""  # first or last ("": the .npz's, else first)
    mode: str = "joint"
    strategy: str = "differentiable"
    weights_path: str = (
        "fast"  # second combined model: closed form ("fast") or every basis ("explicit")
    )
    steps: int = 300  # search steps, warm-up included
    hp_signal: str = "window"
    horizon: int = 8  # window length in steps (see `window_steps`): one encoding update per window
    augment_examples: str = "same"
    warmup_fraction: float = 0.25  # first iterations only (W), before encodings move
    batch_size: int = 128  # first iterations and retraining
    encoding_batch_size: int = 64  # second iterations: temporary-weight step and validation loss
    max_params: int = 50_000
    max_flops: int = 0  # multiply-accumulates of one inference of the derived model (0: no budget)
    max_latency_ms: float = 0.0  # measured on ONNX Runtime, 1 thread, batch 1 (0: no budget)
    cost_weight: float = 1.0  # lambda of the penalty on expected parameters above max_params
    encoding_lr: float = 0.05
    retrain_steps: int = 1500
    retrain_schedule: str = "cosine"
    lr_derivation: str = "peak"
    #: steps of each training-race run (see `race`): -1, a twentieth of retrain_steps (at least 20
    #: or all of them; no race without a retraining); 0, no race
    race_steps: int = -1
    #: a time budget for the whole race (0: none): its trainings shorten to fit, down to
    #: `race.MIN_STEPS` steps, below which there is no race
    max_race_seconds: float = 0.0
    #: 0: retrain the derived model; k > 0: retrain the smallest of it and its compact variants
    #: whose validation accuracy after a race-length training is within k points of the best
    #: (see `compact`)
    within_points: float = 0.0
    max_search_seconds: float = (
        0.0  # stop the search (then derive as usual) after this long; 0: no limit
    )
    plot: bool = True  # draw search.png (about a CPU second)
    max_skips: int = 2  # a cap on skipped blocks in the derived model (guards against collapse)
    #: relative Gaussian noise on the input normalisation statistics every artifact carries (see
    #: `runner.norm_stats`): 0 keeps them exact; the server uses `engine.NORM_NOISE` on people's data
    norm_noise: float = 0.0
    encoding_tol: float = (
        1e-3  # stop when no probability moved more than this over `check_every` steps
    )
    grad_tol: float = 0.0  # stop when the encodings' gradient norm falls below this
    check_every: int = 25
    grad_clip: float = 5.0
    samples: int = 8  # reinforce: (architecture, hyper-parameter) pairs sampled per step
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"
    space: SearchSpace | None = field(
        default=None
    )  # None: the default space for the dataset and mode

    def __post_init__(self) -> None:
        _one_of("mode", self.mode, MODES)
        _one_of("strategy", self.strategy, tuple(REGISTRY))  # registered ones too
        _one_of("device", self.device, DEVICES)
        _one_of("weights_path", self.weights_path, WEIGHT_PATHS)
        _one_of("hp_signal", self.hp_signal, HP_SIGNALS)
        _one_of("augment_examples", self.augment_examples, AUGMENT_EXAMPLES)
        _one_of("lr_derivation", self.lr_derivation, LR_DERIVATIONS)
        _one_of("retrain_schedule", self.retrain_schedule, SCHEDULES)
        check_layout(self.layout, self.channels)
        if not self.dataset:
            raise ValueError("dataset must be 'mnist1d', 'digits' or a path to an .npz file")
        for name in (
            "steps",
            "horizon",
            "max_params",
            "check_every",
            "checkpoint_every",
            "samples",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("retrain_steps", "max_skips", "max_flops"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("batch_size", "encoding_batch_size"):
            if int(getattr(self, name)) < 8:
                raise ValueError(
                    f"{name} must be >= 8 (batch norm and per-basis chunks), got {getattr(self, name)}"
                )
        if int(self.race_steps) < -1:
            raise ValueError(
                f"race_steps must be -1 (auto), 0 (no race) or more, got {self.race_steps}"
            )
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        for name in (
            "cost_weight",
            "encoding_tol",
            "grad_tol",
            "grad_clip",
            "max_search_seconds",
            "max_latency_ms",
            "max_race_seconds",
            "within_points",
            "norm_noise",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.within_points > 100:
            raise ValueError(
                f"within_points is in accuracy points, at most 100, got {self.within_points}"
            )
        if not (math.isfinite(self.encoding_lr) and self.encoding_lr > 0):
            raise ValueError(f"encoding_lr must be > 0, got {self.encoding_lr}")

    @property
    def warmup_steps(self) -> int:
        """Steps of the first iteration alone before the alternation starts."""
        return int(self.steps * self.warmup_fraction)

    @property
    def race_length(self) -> int:
        """Steps of each race training (0: no race)."""
        if self.race_steps >= 0:
            return int(self.race_steps)
        return self.auto_race_length

    @property
    def compact_length(self) -> int:
        """Steps of each `within_points` training: the race's, or the automatic race length when
        the race is off."""
        return self.race_length or self.auto_race_length

    @property
    def auto_race_length(self) -> int:
        """The race length of `race_steps=-1`."""
        shortest = min(AUTO_RACE_MIN, self.retrain_steps)  # a race no longer than the retraining
        return max(shortest, self.retrain_steps // AUTO_RACE_DIVISOR)

    @property
    def window_steps(self) -> int:
        """The window length a search uses: `horizon`, but at most a quarter of the alternating
        steps, so that a short search still moves its encodings (0: the one-step form)."""
        if self.hp_signal != "window":
            return 0
        return max(1, min(self.horizon, (self.steps - self.warmup_steps) // 4))

    def search_part(self) -> dict[str, Any]:
        """`to_json()` without the retraining-only settings: what a search checkpoint must match."""
        return {k: v for k, v in self.to_json().items() if k not in RETRAIN_ONLY}

    def replace(self, **changes: Any) -> SearchConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["space"] = self.space.to_json() if self.space is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchConfig:
        """Inverse of `to_json` (unknown keys are an error)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown SearchConfig fields: {unknown}")
        data = dict(data)
        if data.get("space") is not None:
            data["space"] = SearchSpace.from_json(data["space"])
        return cls(**data)


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
