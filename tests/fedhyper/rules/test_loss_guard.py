"""The loss guard's test, on hand-computed pooled probe losses."""

from __future__ import annotations

import math

import pytest

from fedhyper.rules.loss_guard import (
    loss_diverged,
    loss_flat,
    loss_rose,
    pooled_loss_ratio,
    ratio_flat,
)


def test_the_pooled_ratio_is_the_summed_losses_after_over_before() -> None:
    assert pooled_loss_ratio([2.0, 4.0], [1.0, 2.0]) == 0.5
    assert pooled_loss_ratio([1.0, 3.0], [3.0, 3.0]) == 1.5
    assert pooled_loss_ratio([0.0, 0.0], [0.0, 0.0]) == 1.0
    assert pooled_loss_ratio([0.0], [0.1]) == math.inf
    assert math.isnan(pooled_loss_ratio([], []))
    assert math.isnan(pooled_loss_ratio([1.0, math.nan], [1.0, 1.0]))


def test_the_pooled_loss_must_rise_by_more_than_the_tolerance() -> None:
    # Pooled: 6.0 before, 6.3 after, a rise of exactly 5%.
    before, after = [2.0, 2.0, 2.0], [2.4, 2.0, 1.9]
    assert loss_rose(before, after, tolerance=0.0)
    assert loss_rose(before, after, tolerance=0.049)
    assert not loss_rose(before, after, tolerance=0.051)


def test_a_plateau_does_not_fire_an_overshoot_does() -> None:
    # Shakespeare's plateau: losses near 3.1 move by about 0.01 either way, +0.2% pooled.
    plateau = ([3.10, 3.08, 3.11, 3.09], [3.11, 3.09, 3.12, 3.09])
    assert not loss_rose(*plateau)
    assert loss_rose(*plateau, tolerance=0.0)
    # Adam at a too-large LR, round 1: some clients' loss rises 4x while others' falls
    # 3x; their mean log ratio is about 0, but the pooled loss rises 1.5x.
    assert loss_rose([2.3, 2.3, 2.3, 2.3], [9.2, 0.77, 2.9, 0.77])
    # Every client's loss fell, one of them to exactly 0.
    assert not loss_rose([1.0, 1.0], [0.0, 0.5], tolerance=0.0)


def test_a_flat_loss_moved_within_the_tolerance_either_way() -> None:
    # Shakespeare's plateau, +0.2% pooled; the same rows fallen by 6%; risen by 6%.
    assert loss_flat([3.10, 3.08, 3.11, 3.09], [3.11, 3.09, 3.12, 3.09])
    assert not loss_flat([2.0, 2.0], [1.88, 1.88])
    assert not loss_flat([2.0, 2.0], [2.12, 2.12])
    # Pooled 4.0 -> 3.9, a fall of 2.5%: flat at 5%, not at 2%.
    assert loss_flat([2.0, 2.0], [1.5, 2.4])
    assert not loss_flat([2.0, 2.0], [1.5, 2.4], tolerance=0.02)
    assert not loss_flat([], [])  # no probe: nothing shows a plateau
    with pytest.raises(ValueError, match="tolerance"):
        loss_flat([1.0], [1.0], tolerance=-0.1)


def test_a_ratio_is_flat_within_the_tolerance_either_way() -> None:
    assert ratio_flat(0.975) and ratio_flat(1.04)
    assert not ratio_flat(0.975, tolerance=0.02) and not ratio_flat(1.06)
    assert not ratio_flat(math.nan)  # no probe: nothing shows a plateau
    with pytest.raises(ValueError, match="tolerance"):
        ratio_flat(1.0, tolerance=-0.1)


def test_each_probe_row_counts_once() -> None:
    # A large client's small fall does not hide a small client's blow-up: pooled over
    # the clients' equal probes, 2.0 -> 2.95.
    assert loss_rose([1.0, 1.0], [2.0, 0.95])


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([], []),
        ([1.0, 1.0], [0.5, math.nan]),
        ([1.0, 1.0], [0.5, math.inf]),
        ([1.0, math.nan], [0.5, 0.5]),
        ([1.0, -1.0], [0.5, 0.5]),
    ],
)
def test_no_probe_or_a_loss_that_is_not_finite_counts_as_risen(
    before: list[float], after: list[float]
) -> None:
    assert loss_rose(before, after)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="2 losses before training, 1 after"):
        loss_rose([1.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="1 losses before training, 2 after"):
        pooled_loss_ratio([1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="tolerance must be non-negative"):
        loss_rose([1.0], [1.0], tolerance=-0.1)


def test_divergence_is_a_pooled_rise_beyond_the_limit_or_an_overflow() -> None:
    # Pooled 3.0 -> 6.3 (2.1x): beyond 2, within 2.5; one client's loss fell.
    before, after = [1.0, 2.0], [5.0, 1.3]
    assert loss_diverged(before, after, limit=2.0)
    assert not loss_diverged(before, after, limit=2.5)
    # A client whose model overflowed diverged, whatever the others did.
    assert loss_diverged([1.0, 2.0], [0.5, math.inf], limit=2.0)
    assert loss_diverged([1.0, 2.0], [0.5, math.nan], limit=2.0)
    # Nothing measured before training, or no probe at all: no rise to count.
    assert not loss_diverged([math.nan, 2.0], [5.0, 9.0], limit=2.0)
    assert not loss_diverged([], [], limit=2.0)
    with pytest.raises(ValueError, match="at least 1"):
        loss_diverged(before, after, limit=0.5)
