"""Headline metrics of the benchmarks, pure functions of accuracy curves.

A run's *final accuracy* is the mean of its last :data:`FINAL_ROUNDS` rounds (one round
on a 2,000-example test subset swings by several points). The *target* of a ``compare``
result is FedAvg's final accuracy averaged over its seeds; a run's *rounds to target* is
the first (1-based) round whose accuracy is at or above it, and a strategy's *speed-up*
is FedAvg's mean rounds to target divided by its own. On a ``robustness`` grid, an arm's
*regret* in a cell is the best FedAvg cell's final accuracy minus the arm's final
accuracy there: what a user loses by not tuning FedAvg.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

REFERENCE = "fedavg"
"""The strategy whose final accuracy is the target, and whose best cell is "tuned"."""

FINAL_ROUNDS = 3
"""Rounds averaged into a run's final accuracy."""

WITHIN_POINTS = 1.0
"""A grid cell whose regret is at most this many accuracy points counts as tuned."""

_ROUNDING = 1e-9
"""Slack on float comparisons: 100 * (0.82 - 0.81) is 1.0000000000000009, and the mean of
three rounds at 0.182 is 0.18200000000000002, above each of them."""


def final_accuracy(curve: Sequence[float], rounds: int = FINAL_ROUNDS) -> float:
    """Return the mean accuracy of the last ``rounds`` rounds (all of them if fewer).

    Parameters
    ----------
    curve : sequence of float
        Accuracy per round.
    rounds : int
        How many final rounds to average.

    Returns
    -------
    float
        The final accuracy.

    Raises
    ------
    ValueError
        If the curve is empty.

    """
    if not curve:
        raise ValueError("an accuracy curve needs at least one round")
    return statistics.fmean(curve[-rounds:])


def mean_final_accuracy(curves: Sequence[Sequence[float]]) -> float:
    """Return the final accuracy averaged over seeds' curves: the target, for FedAvg's."""
    return statistics.fmean(final_accuracy(curve) for curve in curves)


def rounds_to(curve: Sequence[float], target: float) -> int | None:
    """Return the first 1-based round whose accuracy is at or above ``target``, else ``None``.

    "At" allows :data:`_ROUNDING`, so a run whose last rounds sit at one value reaches its
    own final accuracy, their mean.
    """
    return next((i + 1 for i, accuracy in enumerate(curve) if accuracy >= target - _ROUNDING), None)


@dataclass(frozen=True)
class Rounds:
    """Rounds to a target over the seeds of one strategy.

    Attributes
    ----------
    mean : float or None
        Mean over the seeds, ``None`` when some seed never reached the target.
    missed : int
        Seeds that never reached it.
    seeds : int
        Seeds in all.

    """

    mean: float | None
    missed: int
    seeds: int

    def __str__(self) -> str:
        """``"7.3"``, or ``"missed 1/3"`` when some seed never got there."""
        return f"missed {self.missed}/{self.seeds}" if self.mean is None else f"{self.mean:.1f}"


def seed_rounds(curves: Sequence[Sequence[float]], target: float) -> Rounds:
    """Return the rounds to ``target`` over the seeds' curves of one strategy."""
    reached = [r for r in (rounds_to(curve, target) for curve in curves) if r is not None]
    missed = len(curves) - len(reached)
    return Rounds(statistics.fmean(reached) if not missed else None, missed, len(curves))


def speedup(reference: Rounds, candidate: Rounds) -> float | None:
    """Return the reference's mean rounds over the candidate's (> 1: the candidate is faster).

    ``None`` when either missed the target on some seed.
    """
    if reference.mean is None or candidate.mean is None:
        return None
    return reference.mean / candidate.mean


@dataclass(frozen=True)
class StrategyMetrics:
    """One strategy's headline figures over its seeds.

    Attributes
    ----------
    strategy : str
        Label of the runs.
    final_mean, final_std : float
        Final accuracy: mean and population standard deviation over seeds.
    rounds : Rounds
        Rounds to the target (FedAvg's final accuracy).

    """

    strategy: str
    final_mean: float
    final_std: float
    rounds: Rounds

    def final_text(self, fmt: str = ".4f") -> str:
        """``"0.8340 ± 0.0110"``: the final accuracy, with its spread when seeds are several."""
        spread = f" ± {self.final_std:{fmt}}" if self.rounds.seeds > 1 else ""
        return f"{self.final_mean:{fmt}}{spread}"


def strategy_metrics(
    curves: Mapping[str, Sequence[Sequence[float]]], target: float
) -> list[StrategyMetrics]:
    """Return the headline figures of each strategy, in the mapping's order.

    Parameters
    ----------
    curves : mapping
        Strategy label -> one accuracy curve per seed.
    target : float
        The accuracy to reach.

    Returns
    -------
    list of StrategyMetrics
        One per strategy.

    """
    metrics = []
    for strategy, seeds in curves.items():
        finals = [final_accuracy(curve) for curve in seeds]
        metrics.append(
            StrategyMetrics(
                strategy=strategy,
                final_mean=statistics.fmean(finals),
                final_std=statistics.pstdev(finals),
                rounds=seed_rounds(seeds, target),
            )
        )
    return metrics


def fastest(metrics: Iterable[StrategyMetrics]) -> StrategyMetrics | None:
    """Return the strategy with the fewest mean rounds to target, ``None`` if there is none.

    Strategies that missed on some seed rank after all that did not; ties are broken by
    the higher final accuracy, then by the earlier strategy.
    """
    return min(
        metrics,
        key=lambda m: (m.rounds.mean is None, m.rounds.mean or 0.0, -m.final_mean),
        default=None,
    )


def most_accurate(metrics: Iterable[StrategyMetrics]) -> StrategyMetrics | None:
    """Return the strategy with the highest final accuracy, ``None`` if there is none.

    Ties are broken as in :func:`fastest` by the rounds to target, then by the earlier
    strategy.
    """
    return min(
        metrics,
        key=lambda m: (-m.final_mean, m.rounds.mean is None, m.rounds.mean or 0.0),
        default=None,
    )


@dataclass(frozen=True)
class Regret:
    """An arm's regret against the best-tuned FedAvg over a grid, in accuracy points.

    Attributes
    ----------
    worst : float
        The largest regret.
    worst_cell : tuple of int
        Its (row, column); the first in row-major order on a tie.
    median : float
        Median regret over the cells that ran.
    within : int
        Cells whose regret is at most :data:`WITHIN_POINTS`.
    cells : int
        Cells that ran.

    """

    worst: float
    worst_cell: tuple[int, int]
    median: float
    within: int
    cells: int


def regret(grid: Sequence[Sequence[float]], tuned: float) -> Regret:
    """Summarise an arm's regret against a tuned accuracy over its grid of final accuracies.

    Parameters
    ----------
    grid : sequence of sequence of float
        Final accuracy per (row, column) cell, NaN where a cell did not run.
    tuned : float
        The best FedAvg cell's final accuracy.

    Returns
    -------
    Regret
        Worst cell, median and cells within one point.

    Raises
    ------
    ValueError
        If no cell ran.

    """
    points = {
        (i, j): 100 * (tuned - accuracy)
        for i, row in enumerate(grid)
        for j, accuracy in enumerate(row)
        if not math.isnan(accuracy)
    }
    if not points:
        raise ValueError("a regret needs at least one cell that ran")
    worst_cell = max(points, key=lambda cell: points[cell])  # max keeps the first on a tie
    return Regret(
        worst=points[worst_cell],
        worst_cell=worst_cell,
        median=statistics.median(points.values()),
        within=sum(value <= WITHIN_POINTS + _ROUNDING for value in points.values()),
        cells=len(points),
    )
