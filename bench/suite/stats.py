"""Statistics over seeds: means with percentile-bootstrap intervals, and compute to reach a target.

Seeds are the unit of resampling: every interval says how much a figure would move with other
seeds (other validation splits, initialisations, batches and sampled configurations).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 10_000
LEVEL = 0.95

#: a reduction over an axis, like `np.mean` and `np.median`
Statistic = Callable[..., np.ndarray]
Curve = list[tuple[float, float]]  # (device-seconds, test accuracy), cost increasing


def bootstrap_ci(
    values: Sequence[float],
    statistic: Statistic = np.mean,
    level: float = LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of `statistic` over `values` (NaN, NaN for none)."""
    data = np.asarray(values, dtype=float)
    if len(data) == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    samples = data[rng.integers(0, len(data), (resamples, len(data)))]
    stats = (
        samples.mean(axis=1) if statistic is np.mean else np.array([statistic(s) for s in samples])
    )
    tail = (1 - level) / 2 * 100
    # "nearest": no interpolation, so ratios that are 0 or inf stay meaningful
    lo, hi = np.percentile(stats, [tail, 100 - tail], method="nearest")
    return float(lo), float(hi)


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) with the bootstrap interval of the mean."""
    if not values:
        return math.nan, math.nan, math.nan
    return (float(np.mean(values)), *bootstrap_ci(values))


def first_reaching(curve: Curve, target: float) -> float:
    """The cost at which a curve first reaches `target` accuracy (inf: never)."""
    return next((cost for cost, acc in curve if acc >= target - 1e-12), math.inf)


def reach_ratio(method_cost: float, reference_cost: float) -> float:
    """method's cost to reach a target / the reference's (0: only the method reached it; inf: only
    the reference did; NaN: neither)."""
    if math.isinf(method_cost) and math.isinf(reference_cost):
        return math.nan
    if math.isinf(reference_cost):
        return 0.0
    return method_cost / reference_cost


def median_ci(ratios: Sequence[float]) -> tuple[float, float, float]:
    """(median, low, high) of ratios that may be 0 or inf; NaNs (neither reached) left out."""
    kept = [r for r in ratios if not math.isnan(r)]
    if not kept:
        return math.nan, math.nan, math.nan
    return (float(np.median(kept)), *bootstrap_ci(kept, statistic=np.median))
