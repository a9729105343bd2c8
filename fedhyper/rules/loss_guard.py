r"""The loss guard's test: whether the clients' loss on their own rows rose by far.

Each client measures its loss on the same rows of its training data before and after a
round of training. A client LR that overshoots by far raises that loss by a large
factor in some clients, even while it falls in others: at Adam's LR 0.01 on
Fashion-MNIST, the loss of the clients' probe rows together rises 1.2-1.5x in round 1
(three seeds). On a loss plateau it stays where it was, up in some clients and down in
others by a few thousandths: while Shakespeare's character LSTM sits on its "always a
space" plateau, the pooled probe loss rises by at most 0.2% in a round. Reading every
round whose loss did not fall as an overshoot lowers the LR of a model that needed a
larger one, so the guard tolerates a small rise and leaves a slow drift to the cosine
signals.

A client LR far too large for the model makes the clients' pooled loss several times what
it was (Fashion-MNIST's CNN at local LR 0.1 from its initial weights: 3.1x, pooled), and
the average of such models is no step at all: scaled by a global LR of 2, it left the
network predicting one class for the rest of the run. :func:`loss_diverged` marks such a
round, so that a rule can step no further than the clients' average.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["loss_diverged", "loss_flat", "loss_rose", "pooled_loss_ratio", "ratio_flat"]


def pooled_loss_ratio(before: Sequence[float], after: Sequence[float]) -> float:
    r"""Return the clients' pooled probe loss after training over the same before it.

    .. math::

        r = \frac{\sum_i \ell^{\text{after}}_i}{\sum_i \ell^{\text{before}}_i}

    over the :math:`n` clients' mean losses on their probe rows. Every client probes the
    same number of rows (all of its own, where it holds fewer), so a row counts about as
    much in any client, whatever its size.

    Parameters
    ----------
    before, after
        Each client's probe loss before and after its training, in the same order.

    Returns
    -------
    float
        :math:`r`; NaN when no client measured one, or a loss is missing (NaN), not
        finite or negative; infinite when only the losses after training are positive.

    Raises
    ------
    ValueError
        If the sequences differ in length.

    """
    if len(before) != len(after):
        raise ValueError(f"{len(before)} losses before training, {len(after)} after")
    if not before or not all(math.isfinite(loss) and loss >= 0.0 for loss in [*before, *after]):
        return math.nan
    total_before, total_after = math.fsum(before), math.fsum(after)
    if total_before == 0.0:
        return 1.0 if total_after == 0.0 else math.inf
    return total_after / total_before


def loss_rose(before: Sequence[float], after: Sequence[float], tolerance: float = 0.05) -> bool:
    r"""Return whether the clients' pooled probe loss rose by more than ``tolerance``.

    That is, whether :func:`pooled_loss_ratio` exceeds :math:`1 + \tau`, :math:`\tau`
    the ``tolerance``.

    Parameters
    ----------
    before, after
        Each client's probe loss before and after its training, in the same order.
    tolerance
        :math:`\tau \ge 0`, the relative rise taken as a plateau's noise (0: any rise).

    Returns
    -------
    bool
        ``True`` also when the ratio is NaN (no probe, or a loss that is missing, not
        finite or negative): a client whose loss overflowed overshot.

    Raises
    ------
    ValueError
        If the sequences differ in length or ``tolerance`` is negative.

    """
    if tolerance < 0.0:
        raise ValueError(f"tolerance must be non-negative, got {tolerance}")
    return not pooled_loss_ratio(before, after) <= 1.0 + tolerance


def loss_flat(before: Sequence[float], after: Sequence[float], tolerance: float = 0.05) -> bool:
    r"""Return whether the clients' pooled probe loss moved by at most ``tolerance`` either way.

    That is, whether :func:`pooled_loss_ratio` lies within :math:`[1 - \tau, 1 + \tau]`:
    the clients' training neither lowered their loss beyond a plateau's noise nor raised
    it past the guard's tolerance.

    Parameters
    ----------
    before, after
        Each client's probe loss before and after its training, in the same order.
    tolerance
        :math:`\tau \ge 0`, the relative change taken as a plateau's noise.

    Returns
    -------
    bool
        ``False`` also when the ratio is NaN (no probe, or a loss that is missing, not
        finite or negative): nothing shows a plateau.

    Raises
    ------
    ValueError
        If the sequences differ in length or ``tolerance`` is negative.

    """
    return ratio_flat(pooled_loss_ratio(before, after), tolerance)


def ratio_flat(ratio: float, tolerance: float = 0.05) -> bool:
    r"""Return whether a pooled probe loss ratio lies within :math:`[1 - \tau, 1 + \tau]`.

    :func:`loss_flat` on a ratio already computed, for a rule that keeps the ratio.

    Parameters
    ----------
    ratio
        A :func:`pooled_loss_ratio`; NaN is never flat.
    tolerance
        :math:`\tau \ge 0`.

    Raises
    ------
    ValueError
        If ``tolerance`` is negative.

    """
    if tolerance < 0.0:
        raise ValueError(f"tolerance must be non-negative, got {tolerance}")
    return abs(ratio - 1.0) <= tolerance


def loss_diverged(before: Sequence[float], after: Sequence[float], limit: float) -> bool:
    r"""Return whether training made the clients' pooled probe loss over ``limit`` times worse.

    That is, whether :func:`pooled_loss_ratio` exceeds :math:`\lambda`, the ``limit``, or
    some client's loss was finite before its training and is not after it (its model
    overflowed). Unlike :func:`loss_rose`, a round with no probe, or with a loss missing
    before training, does not count: a rise must be measured to count.

    Parameters
    ----------
    before, after
        Each client's probe loss before and after its training, in the same order.
    limit
        :math:`\lambda \ge 1`.

    Returns
    -------
    bool

    Raises
    ------
    ValueError
        If the sequences differ in length or ``limit`` is below 1.

    """
    if limit < 1.0:
        raise ValueError(f"limit must be at least 1, got {limit}")
    ratio = pooled_loss_ratio(before, after)
    if math.isnan(ratio):
        return any(
            math.isfinite(start) and not math.isfinite(end)
            for start, end in zip(before, after, strict=True)
        )
    return ratio > limit
