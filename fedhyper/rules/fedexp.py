r"""FedExP (Jhunjhunwala et al., ICLR 2023): an extrapolated global step size.

The server step size grows with how much the clients' updates cancel in their average:

.. math::

    \eta_g = \max\Bigl(1,\ \frac{\sum_{i \in S} p_i \|\Delta_i\|^2}
        {2\,(\|\bar\Delta\|^2 + \epsilon)}\Bigr),
    \qquad \bar\Delta = \sum_{i\in S} p_i \Delta_i,\quad \sum_i p_i = 1,

which with uniform weights :math:`p_i = 1/|S|` is the paper's
:math:`\max(1, \sum_i \|\Delta_i\|^2 / (2|S|(\|\bar\Delta\|^2 + \epsilon)))`. Everything is
computed from the client updates themselves (new minus old), so there is no copy of the
old weights that could go stale (the FedHyper repository's FedExP compared against an
aliased, outdated weight dict).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from fedhyper.rules.base import ServerRule, ServerStep, require_keys
from fedhyper.rules.vector import scaled, sq_norm

__all__ = ["FedExP"]


class FedExP(ServerRule):
    r"""FedExP as a server rule: :math:`w_{t+1} = w_t + \eta_g \bar\Delta_t`.

    Feed each client's update to :meth:`add_client` as it arrives (only its squared norm
    is kept, so no client update is stored), then call :meth:`step` with the aggregate
    :math:`\bar\Delta_t` computed with the same weights.

    Parameters
    ----------
    eps
        :math:`\epsilon` (official code: 1e-3 for CIFAR-10, 0.1 for EMNIST).

    """

    def __init__(self, eps: float = 1e-3) -> None:
        if eps < 0.0:
            raise ValueError(f"eps must be non-negative, got {eps}")
        self.eps = float(eps)
        self._client_sq_norm_sum = 0.0
        self._weight_sum = 0.0

    def add_client(self, client_delta: Sequence[Tensor], weight: float = 1.0) -> None:
        r"""Record :math:`p_i \|\Delta_i\|^2` for one client of the current round."""
        if weight <= 0.0:
            raise ValueError(f"weight must be positive, got {weight}")
        self._client_sq_norm_sum += weight * sq_norm(client_delta)
        self._weight_sum += weight

    def step(self, delta: Sequence[Tensor]) -> ServerStep:
        r"""Return :math:`\eta_g \bar\Delta_t` and clear the round's client statistics."""
        if self._weight_sum == 0.0:
            raise RuntimeError("FedExP.step needs add_client for every client of the round first")
        mean_client_sq_norm = self._client_sq_norm_sum / self._weight_sum
        eta = max(1.0, mean_client_sq_norm / (2.0 * (sq_norm(delta) + self.eps)))
        self._client_sq_norm_sum = 0.0
        self._weight_sum = 0.0
        return ServerStep(
            update=scaled(delta, eta), global_lr=eta, client_lr=None, hypergradient=0.0
        )

    def state_dict(self) -> dict[str, Any]:
        """Return the current round's client statistics."""
        return {"client_sq_norm_sum": self._client_sq_norm_sum, "weight_sum": self._weight_sum}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`."""
        require_keys(state, "client_sq_norm_sum", "weight_sum")
        self._client_sq_norm_sum = float(state["client_sq_norm_sum"])
        self._weight_sum = float(state["weight_sum"])
