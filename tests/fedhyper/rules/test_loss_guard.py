"""The loss guard's test, on hand-computed log loss ratios."""

from __future__ import annotations

import math

import pytest

from fedhyper.rules.loss_guard import loss_rose


def test_a_mean_rise_must_exceed_its_standard_error_times_the_threshold() -> None:
    # log ratios 0.09531, 0, -0.05129: mean 0.014673, sample std 0.074393, so the
    # standard error is 0.042951 and the mean is 0.3416 standard errors above 0.
    before, after = [2.0, 2.0, 2.0], [2.2, 2.0, 1.9]
    assert loss_rose(before, after, threshold=0.0)
    assert loss_rose(before, after, threshold=0.34)
    assert not loss_rose(before, after, threshold=0.35)
    assert not loss_rose(before, after)


def test_a_plateau_does_not_fire_an_overshoot_does() -> None:
    # Shakespeare's plateau: losses near 3.1 move by about 0.01 either way; their mean
    # log ratio, 0.0008, is positive, but not by two standard errors (0.0104).
    plateau = ([3.10, 3.12, 3.08, 3.11], [3.11, 3.09, 3.12, 3.10])
    assert not loss_rose(*plateau)
    assert loss_rose(*plateau, threshold=0.0)
    # Both clients' loss rose 2x and 4x: log ratios 0.693 and 1.386, mean 1.040, two
    # standard errors 0.693.
    assert loss_rose([1.0, 1.0], [2.0, 4.0])
    # The same rise in every client has no spread: any threshold fires.
    assert loss_rose([1.0, 2.0, 3.0], [1.1, 2.2, 3.3], threshold=100.0)
    # Every client's loss fell, one of them to exactly 0.
    assert not loss_rose([1.0, 1.0], [0.0, 0.5], threshold=0.0)


def test_one_client_has_no_spread_and_any_rise_counts() -> None:
    assert loss_rose([2.0], [2.0001])
    assert not loss_rose([2.0], [2.0])


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ([], []),
        ([1.0, 1.0], [0.5, math.nan]),
        ([1.0, 1.0], [0.5, math.inf]),
        ([1.0, math.nan], [0.5, 0.5]),
        ([1.0, 0.0], [0.5, 0.5]),
    ],
)
def test_no_probe_or_a_loss_that_is_not_finite_counts_as_risen(
    before: list[float], after: list[float]
) -> None:
    assert loss_rose(before, after)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="2 losses before training, 1 after"):
        loss_rose([1.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="threshold must be non-negative"):
        loss_rose([1.0], [1.0], threshold=-1.0)
