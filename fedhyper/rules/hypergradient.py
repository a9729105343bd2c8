r"""The hypergradient signal shared by the FedHyper rules, and clipping.

Every FedHyper rule moves a learning rate along the agreement between two successive
update directions :math:`u` (this round) and :math:`v` (the previous round or momentum):

* raw (the reference): :math:`h = \langle u, v \rangle`; its scale grows with the model
  size and with the square of the learning rate, so a fixed hyper-LR either saturates
  the bounds or barely moves (measured, see ALGORITHMS.md);
* normalised: :math:`h = \cos(u, v) \in [-1, 1]`, invariant to both scales, so the
  hyper-LR :math:`\beta` alone sets the per-round change.

The rules add :math:`\beta h` to their accumulator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from fedhyper.rules.vector import cosine, inner

__all__ = ["check_bounds", "clip", "hypergradient_signal"]


def hypergradient_signal(
    current: Sequence[Tensor], previous: Sequence[Tensor], *, normalised: bool
) -> float:
    r"""Return :math:`\langle u, v\rangle` or, if ``normalised``, :math:`\cos(u, v)`.

    Parameters
    ----------
    current
        :math:`u`, this round's update direction.
    previous
        :math:`v`, the direction it is compared with.
    normalised
        Use the cosine instead of the raw inner product.

    Returns
    -------
    float
        The signal; ``0.0`` (no move) when it is NaN, which updates near float32's
        range can produce (``inf - inf``), so that clipping always yields a number within
        the bounds. An infinite signal is kept: clipping takes it to a bound.

    """
    signal = cosine(current, previous) if normalised else inner(current, previous)
    return 0.0 if math.isnan(signal) else signal


def clip(value: float, bounds: tuple[float, float]) -> float:
    """Clamp ``value`` to the closed interval ``bounds = (low, high)``."""
    low, high = bounds
    return min(max(value, low), high)


def check_bounds(name: str, bounds: tuple[float, float]) -> tuple[float, float]:
    """Validate that ``bounds`` is an ordered pair and return it as floats."""
    low, high = (float(b) for b in bounds)
    if not low <= high:
        raise ValueError(f"{name} must satisfy low <= high, got {bounds}")
    return low, high
