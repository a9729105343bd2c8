"""The headline benchmark metrics on toy curves, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from benchmarks.metrics import (
    Rounds,
    StrategyMetrics,
    fastest,
    final_accuracy,
    most_accurate,
    regret,
    rounds_to,
    seed_rounds,
    speedup,
    strategy_metrics,
)

NAN = math.nan


def test_final_accuracy_is_the_mean_of_the_last_three_rounds() -> None:
    assert final_accuracy([0.1, 0.2, 0.3, 0.5, 0.6]) == pytest.approx((0.3 + 0.5 + 0.6) / 3)
    assert final_accuracy([0.4, 0.6]) == pytest.approx(0.5)  # fewer rounds: all of them
    with pytest.raises(ValueError, match="at least one round"):
        final_accuracy([])


def test_rounds_to_counts_from_one_and_a_tie_reaches_the_target() -> None:
    assert rounds_to([0.1, 0.5, 0.5, 0.7], 0.5) == 2
    assert rounds_to([0.1, 0.4], 0.5) is None


def test_a_flat_run_reaches_its_own_final_accuracy() -> None:
    # The mean of three rounds at 0.182 is 0.18200000000000002 in floats.
    curve = [0.1, 0.182, 0.182, 0.182]
    assert final_accuracy(curve) > 0.182
    assert rounds_to(curve, final_accuracy(curve)) == 2


def test_a_missed_seed_leaves_no_mean_and_no_speedup() -> None:
    reached = seed_rounds([[0.1, 0.6], [0.1, 0.2, 0.7]], 0.5)
    assert reached == Rounds(mean=2.5, missed=0, seeds=2)
    assert str(reached) == "2.5"
    missed = seed_rounds([[0.1, 0.6], [0.1, 0.2, 0.3]], 0.5)
    assert missed == Rounds(mean=None, missed=1, seeds=2)
    assert str(missed) == "missed 1/2"
    assert speedup(Rounds(5.0, 0, 2), reached) == pytest.approx(2.0)
    assert speedup(Rounds(5.0, 0, 2), missed) is None
    assert speedup(missed, reached) is None


def test_strategy_metrics_average_the_seeds() -> None:
    # final accuracies 0.7 and 0.6 (means of the last 3 rounds); target 0.65
    (m,) = strategy_metrics(
        {"fedavg": [[0.2, 0.4, 0.6, 0.7, 0.8], [0.3, 0.5, 0.5, 0.6, 0.7]]}, 0.65
    )
    assert m.strategy == "fedavg"
    assert m.final_mean == pytest.approx(0.65)
    assert m.final_std == pytest.approx(0.05)  # population std over the two seeds
    assert m.rounds == Rounds(mean=4.5, missed=0, seeds=2)  # rounds 4 and 5


def _m(name: str, final: float, rounds: float | None) -> StrategyMetrics:
    return StrategyMetrics(name, final, 0.0, Rounds(rounds, 0 if rounds else 1, 1))


def test_fastest_breaks_ties_by_final_accuracy_and_ranks_misses_last() -> None:
    candidates = [_m("missed", 0.99, None), _m("a", 0.80, 3.0), _m("b", 0.85, 3.0)]
    assert fastest(candidates) == candidates[2]
    assert fastest([_m("a", 0.8, 3.0), _m("b", 0.8, 3.0)]) == _m("a", 0.8, 3.0)  # first
    assert fastest([_m("missed", 0.5, None)]) == _m("missed", 0.5, None)
    assert fastest([]) is None


def test_most_accurate_breaks_ties_by_rounds() -> None:
    candidates = [_m("slow", 0.85, 9.0), _m("missed", 0.85, None), _m("quick", 0.85, 4.0)]
    assert most_accurate(candidates) == candidates[2]
    assert most_accurate([_m("a", 0.7, 2.0), _m("b", 0.9, 20.0)]) == _m("b", 0.9, 20.0)
    assert most_accurate([]) is None


def test_regret_worst_cell_median_and_cells_within_one_point() -> None:
    grid = [[0.79, 0.80], [0.70, 0.70], [NAN, 0.85]]
    # regrets against 0.80 in points: 1 (counts as within), 0, 10, 10 (a tie), -5
    r = regret(grid, 0.80)
    assert r.worst == pytest.approx(10.0)
    assert r.median == pytest.approx(1.0)
    assert r.worst_cell == (1, 0)  # the first of the tied cells, row-major
    assert (r.within, r.cells) == (3, 5)  # the NaN cell did not run
    with pytest.raises(ValueError, match="at least one cell"):
        regret([[NAN]], 0.8)
