r"""A bias-corrected exponential average of a scalar signal, optionally over its RMS.

FedHyper-Auto's signals are cosines, so their sign means the same at any scale, but their
size does not: a cosine between noisy vectors is small, and how noisy a round's gradients
are depends on the model, the data and the client optimiser. Dividing the average by the
RMS of the same window keeps the sign and replaces the size by the signal's consistency.
"""

from __future__ import annotations

import math
from typing import Any

from fedhyper.rules.base import require_keys

__all__ = ["SignalAverage"]


class SignalAverage:
    r"""Exponential average of a signal :math:`s_1, s_2, \dots`, bias-corrected.

    .. math::

        e_n = \rho e_{n-1} + (1 - \rho) s_n, \qquad
        v_n = \rho v_{n-1} + (1 - \rho) s_n^2, \qquad
        \hat e_n = \frac{e_n}{1 - \rho^n}, \qquad
        \tilde e_n = \frac{e_n}{\sqrt{v_n (1 - \rho^n)}}

    :meth:`add` returns :math:`\hat e_n` (:attr:`mean`), or with ``rms_normalised`` the
    average over the RMS (:attr:`consistency`; both are kept whatever the mode),
    :math:`\tilde e_n \in [-1, 1]` by Cauchy–Schwarz (1 for a signal that kept its
    sign and size, near 0 for one that flips; 0 while every signal was 0). With
    :math:`\rho = 0` it returns :math:`s_n`, or its sign.

    Parameters
    ----------
    smoothing
        :math:`\rho \in [0, 1)`.
    rms_normalised
        Divide by the RMS, see above.

    """

    def __init__(self, smoothing: float, rms_normalised: bool = False) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")
        self.smoothing = float(smoothing)
        self.rms_normalised = rms_normalised
        self._average = 0.0
        self._power = 0.0
        self._count = 0

    def add(self, signal: float) -> float:
        """Take the next signal and return :attr:`consistency` or :attr:`mean`, per the mode."""
        rho = self.smoothing
        self._count += 1
        self._average = rho * self._average + (1.0 - rho) * signal
        self._power = rho * self._power + (1.0 - rho) * signal * signal
        return self.consistency if self.rms_normalised else self.mean

    @property
    def mean(self) -> float:
        r"""The bias-corrected average :math:`\hat e_n` (0 before any signal)."""
        return self._average / (1.0 - self.smoothing**self._count) if self._count else 0.0

    @property
    def consistency(self) -> float:
        r"""The average over the RMS, :math:`\tilde e_n` (0 before any signal, or all were 0)."""
        power = self._power * (1.0 - self.smoothing**self._count)
        return self._average / math.sqrt(power) if power > 0.0 else 0.0

    def state_dict(self) -> dict[str, Any]:
        """Return the two averages and the count."""
        return {"average": self._average, "power": self._power, "count": self._count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`."""
        require_keys(state, "average", "power", "count")
        self._average = float(state["average"])
        self._power = float(state["power"])
        self._count = int(state["count"])
