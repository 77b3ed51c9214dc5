"""Deriving the output (claims 11-13): argmax for categorical choices, weighted sum for continuous ones,
under two constraints: a cap on skipped blocks and the parameter budget."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autohas_edge.server.search import hparams as hp
from autohas_edge.server.search.models import Layout, count_params, model_args_for
from autohas_edge.server.search.space import Choice, SearchSpace

if TYPE_CHECKING:
    from autohas_edge.server.search.config import SearchConfig
    from autohas_edge.server.search.latency import LatencyTable

Encodings = dict[str, dict[str, float]]
#: how the device SDK retrains the classification head (few local examples, numpy)
HEAD_EPOCHS = 30
HEAD_BATCH = 32


def derive_hparams(space: SearchSpace, encodings: Encodings) -> dict[str, Any]:
    """name -> value for every hyper-parameter choice."""
    return {c.name: c.derive(list(encodings[c.name].values())) for c in space.hparams}


def derive_learning_rate(encoded: float, trajectory: list[float], warmup: int, how: str) -> float:
    """The learning rate a fresh training of the derived model starts its schedule from.

    `encoding`: the final encoding's weighted sum of the bases (the patent's rule). `peak`: the highest
    rate E[lr] the searched schedule used after warm-up. A look-ahead signal answers "which rate for
    the next steps of *this* training", so E[lr] anneals as the shared weights train (every greedy
    schedule does); its last value is the rate for the end of a training, and a retraining that
    warmed up to it would train at its end rate throughout. Its peak is the rate the search chose for
    the young shared weights: where a fresh training's warm-up + cosine schedule starts.
    """
    peak = max(trajectory[warmup:], default=encoded)
    # the trajectory is recorded in the search's precision: a schedule that never rose above the
    # final value (a fixed rate, say) keeps the exact encoded value
    if how == "encoding" or peak <= encoded * (1 + 1e-6):
        return encoded
    return peak


@dataclass(frozen=True)
class Limit:
    """A budget the derived model must meet: `cost(arch)` picks the moves (cheap to evaluate),
    `actual(arch)` (default: `cost`) decides whether the budget holds (e.g. a measured latency)."""

    name: str
    limit: float
    cost: Callable[[dict[str, Any]], float]
    actual: Callable[[dict[str, Any]], float] | None = None

    def over(self, arch: dict[str, Any]) -> bool:
        """Whether `arch` breaks this budget."""
        return (self.actual or self.cost)(arch) > self.limit


def param_limit(
    layout: Layout, input_shape: tuple[int, ...], num_classes: int, max_params: int
) -> Limit:
    """The parameter budget as a `Limit`."""

    def cost(arch: dict[str, Any]) -> float:
        return count_params(model_args_for(layout, input_shape, num_classes, arch))

    return Limit("max_params", max_params, cost)


def derive_arch(
    space: SearchSpace,
    encodings: Encodings,
    layout: Layout,
    input_shape: tuple[int, ...],
    num_classes: int,
    max_params: int,
    max_skips: int,
) -> dict[str, Any]:
    """name -> value for every architecture choice under the parameter budget (`derive_within`)."""
    limit = param_limit(layout, input_shape, num_classes, max_params)
    return derive_within(space, encodings, [limit], max_skips)[0]


def derive_within(
    space: SearchSpace,
    encodings: Encodings,
    limits: list[Limit],
    max_skips: int,
) -> tuple[dict[str, Any], int]:
    """name -> value for every architecture choice: argmax, then the skip cap, then the budgets;
    also how many changes the budgets forced (0: the argmax met them).

    Each change lowers the cheap cost of the budgets `arch` breaks, raises none of a budget it meets
    above that budget's limit, and leads to an architecture not tried before: a measured budget
    (`Limit.actual`) can disagree with its cheap cost, and two budgets can pull opposite ways, so
    without these rules the changes could cycle for ever."""
    arch = {c.name: c.derive(list(encodings[c.name].values())) for c in space.arch}
    _cap_skips(space.arch, encodings, arch, max_skips)
    tried = {_key(arch)}
    while over := [limit for limit in limits if limit.over(arch)]:
        met = [limit for limit in limits if limit not in over]
        move = _cheapest_move(space.arch, encodings, arch, (over, met), max_skips, tried)
        if move is None:
            names = ", ".join(f"{lim.name}={lim.limit:g}" for lim in over)
            raise ValueError(f"no architecture in the search space fits {names}")
        arch[move[0]] = move[1]
        tried.add(_key(arch))
    return arch, len(tried) - 1


def _key(arch: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, str(value)) for name, value in arch.items()))


def _cap_skips(
    choices: tuple[Choice, ...], encodings: Encodings, arch: dict[str, Any], max_skips: int
) -> None:
    skipped = sorted((encodings[c.name]["skip"], c.name) for c in choices if arch[c.name] == "skip")
    for _, name in skipped[: max(0, len(skipped) - max_skips)]:
        arch[name] = "keep"  # keep the blocks the encoding was least sure to skip


def _cheapest_move(
    choices: tuple[Choice, ...],
    encodings: Encodings,
    arch: dict[str, Any],
    limits: tuple[list[Limit], list[Limit]],
    max_skips: int,
    tried: set[tuple[tuple[str, str], ...]],
) -> tuple[str, Any] | None:
    """The change that gives up the least log-probability per relative cost saved (summed over the
    budgets `arch` breaks, `limits[0]`), among those to an untried architecture that keep the cheap
    cost of every budget it meets (`limits[1]`) within its limit (or no higher than now)."""
    over, met = limits
    current = [limit.cost(arch) for limit in over]
    kept = [limit.cost(arch) for limit in met]
    skips = sum(v == "skip" for v in arch.values())
    best, best_score = None, math.inf
    for choice in choices:
        probs = encodings[choice.name]
        for value, label in zip(choice.candidates, choice.labels, strict=True):
            if value == arch[choice.name] or (value == "skip" and skips >= max_skips):
                continue
            changed = {**arch, choice.name: value}
            if _key(changed) in tried or any(
                lim.cost(changed) > max(lim.limit, now) for lim, now in zip(met, kept, strict=True)
            ):
                continue
            saved = sum(
                (now - limit.cost(changed)) / limit.limit
                for now, limit in zip(current, over, strict=True)
            )
            if saved <= 0:
                continue
            drop = math.log(max(probs[str(arch[choice.name])], 1e-12)) - math.log(
                max(probs[label], 1e-12)
            )
            if drop / saved < best_score:
                best, best_score = (choice.name, value), drop / saved
    return best


def feasible(
    arch: dict[str, Any],
    layout: Layout,
    input_shape: tuple[int, ...],
    num_classes: int,
    max_params: int,
    max_skips: int,
) -> bool:
    """The rule every derived model obeys: at most `max_skips` skipped blocks, `max_params` parameters."""
    skips = sum(value == "skip" for value in arch.values())
    params = count_params(model_args_for(layout, input_shape, num_classes, arch))
    return skips <= max_skips and params <= max_params


def smallest_params(
    space: SearchSpace,
    layout: Layout,
    input_shape: tuple[int, ...],
    num_classes: int,
    max_skips: int,
) -> int:
    """Parameters of the smallest model the space allows (to reject impossible budgets up front)."""
    limit = param_limit(layout, input_shape, num_classes, 0)
    return int(smallest_cost(space, limit.cost, max_skips))


def smallest_cost(
    space: SearchSpace, cost: Callable[[dict[str, Any]], float], max_skips: int
) -> float:
    """The least `cost` the space allows: every smallest candidate, and the `max_skips` skips that
    save the most (exact for costs that grow with every candidate, like parameters and FLOPs)."""
    depth = [c for c in space.arch if c.name.endswith(".depth")]
    arch: dict[str, Any] = {
        c.name: min(c.candidates, key=float) for c in space.arch if c not in depth
    }
    arch.update({c.name: "keep" for c in depth})
    full = cost(arch)
    savings = [
        (full - cost({**arch, c.name: "skip"}), c.name) for c in depth if "skip" in c.candidates
    ]
    for _, name in sorted(savings, reverse=True)[:max_skips]:
        arch[name] = "skip"  # skip the blocks whose removal saves the most
    return cost(arch)


def limits_for(
    config: SearchConfig,
    space: SearchSpace,
    layout: Layout,
    input_shape: tuple[int, ...],
    num_classes: int,
    latency: LatencyTable | None = None,
) -> list[Limit]:
    """The budgets `config` sets (max_params always; max_flops and max_latency_ms when > 0; the
    latency one predicted by the `latency` table to pick moves and measured to decide)."""
    from autohas_edge.server.search.costs import count_flops

    def args(arch: dict[str, Any]) -> dict[str, Any]:
        return model_args_for(layout, input_shape, num_classes, arch)

    limits = [param_limit(layout, input_shape, num_classes, config.max_params)]
    if config.max_flops > 0:
        limits.append(Limit("max_flops", config.max_flops, lambda a: count_flops(args(a))))
    if config.max_latency_ms > 0:
        from autohas_edge.server.search.latency import measure_latency_ms

        if latency is None:
            raise ValueError("max_latency_ms needs the space's latency table")
        table = latency
        limits.append(
            Limit(
                "max_latency_ms",
                config.max_latency_ms,
                lambda a: table.predict(space, a),
                lambda a: measure_latency_ms(args(a)),
            )
        )
    return limits


def fine_tuning(hparams: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters for on-device head training, derived from the searched ones.

    `learning_rate` is the optimizer's effective rate; `weight_decay` is decoupled
    (each step ``w -= learning_rate * weight_decay * w``), rescaled so that the decay per step equals
    the search's.
    """
    optimizer = str(hparams["optimizer"])
    scale = hp.LR_SCALE[optimizer]
    return {
        "learning_rate": float(hparams["learning_rate"]) * scale,
        "weight_decay": float(hparams["weight_decay"]) / scale,
        "epochs": HEAD_EPOCHS,
        "batch_size": HEAD_BATCH,
        "label_smoothing": hp.label_smoothing(str(hparams["loss"])),
        "optimizer": optimizer,
    }
