r"""The loss guard's test: whether the clients' loss on their own rows rose beyond its noise.

Each client measures its loss on the same rows of its training data before and after a
round of training. A client LR that overshoots raises that loss; one on a loss plateau
leaves it where it was, up in some clients and down in others by a few thousandths
(Shakespeare, where the character LSTM sits on its "always a space" plateau for rounds).
Reading every round whose loss did not fall as an overshoot lowers the LR of a model
that needed a larger one, so the test asks for a rise that stands out of the spread
between the clients.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence

__all__ = ["loss_rose"]


def loss_rose(before: Sequence[float], after: Sequence[float], threshold: float = 2.0) -> bool:
    r"""Return whether the clients' probe loss rose over the round, beyond its noise.

    With :math:`r_i = \log(\ell^{\text{after}}_i / \ell^{\text{before}}_i)` for the
    :math:`n` clients, the loss rose when

    .. math::

        \bar r > z\, s / \sqrt{n},

    :math:`\bar r` and :math:`s` the mean and sample standard deviation of the
    :math:`r_i`, and :math:`z` the ``threshold`` (a one-sided test of a mean rise;
    :math:`z = 0` asks only that the mean log-ratio be positive). Each client counts
    once, whatever its size: every probe has the same number of rows. With one client
    there is no spread to measure, and any rise counts.

    Parameters
    ----------
    before, after
        Each client's probe loss before and after its training, in the same order.
    threshold
        :math:`z \ge 0`, in standard errors of the mean.

    Returns
    -------
    bool
        ``True`` also when no client measured one, or when a loss is missing (NaN), not
        finite, negative or, before training, zero: a client whose loss overflowed
        overshot.

    Raises
    ------
    ValueError
        If the sequences differ in length or ``threshold`` is negative.

    """
    if len(before) != len(after):
        raise ValueError(f"{len(before)} losses before training, {len(after)} after")
    if threshold < 0.0:
        raise ValueError(f"threshold must be non-negative, got {threshold}")
    ratios = [_log_ratio(start, end) for start, end in zip(before, after, strict=True)]
    if not ratios or not all(math.isfinite(ratio) for ratio in ratios):
        return True
    mean = statistics.fmean(ratios)
    if len(ratios) == 1:
        return mean > 0.0
    standard_error = statistics.stdev(ratios) / math.sqrt(len(ratios))
    return mean > max(threshold * standard_error, 0.0)


def _log_ratio(before: float, after: float) -> float:
    """Return ``log(after / before)``; NaN unless both are finite, ``before`` positive."""
    if not (math.isfinite(before) and math.isfinite(after) and before > 0.0 and after >= 0.0):
        return math.nan
    # A loss that fell to exactly 0 fell as far as a float can tell.
    return math.log(max(after, sys.float_info.min) / before)
