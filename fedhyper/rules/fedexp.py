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

import torch
from torch import Tensor

from fedhyper.rules.base import ServerRule, ServerStep, require_keys
from fedhyper.rules.vector import clone_list, scaled, sq_norm

__all__ = ["FedExP", "fedexp_step_size"]


def _step_size(mean_client_sq_norm: float, mean_delta_sq_norm: float, eps: float) -> float:
    return max(1.0, mean_client_sq_norm / (2.0 * (mean_delta_sq_norm + eps)))


def fedexp_step_size(
    client_deltas: Sequence[Sequence[Tensor]],
    mean_delta: Sequence[Tensor],
    eps: float,
    weights: Sequence[float] | None = None,
) -> float:
    r"""FedExP's global step size :math:`\eta_g` (see the module docstring).

    Parameters
    ----------
    client_deltas
        :math:`\Delta_i` for each client :math:`i \in S` (new minus old).
    mean_delta
        :math:`\bar\Delta`, their mean under the same ``weights``.
    eps
        :math:`\epsilon` (official code: 1e-3 for CIFAR, 0.1 for EMNIST).
    weights
        Aggregation weights :math:`p_i` (normalised here); ``None`` for the unweighted mean.

    Returns
    -------
    float
        :math:`\eta_g \ge 1`.

    """
    if not client_deltas:
        raise ValueError("FedExP needs at least one client update")
    if weights is None:
        weights = [1.0] * len(client_deltas)
    if len(weights) != len(client_deltas):
        raise ValueError(f"{len(weights)} weights for {len(client_deltas)} client updates")
    total = float(sum(weights))
    client_term = sum(w * sq_norm(d) for w, d in zip(weights, client_deltas, strict=True))
    return _step_size(client_term / total, sq_norm(mean_delta), eps)


class FedExP(ServerRule):
    r"""FedExP as a server rule: :math:`w_{t+1} = w_t + \eta_g \bar\Delta_t`.

    Feed each client's update to :meth:`add_client` as it arrives (only its squared norm
    is kept, so no client update is stored), then call :meth:`step` with the aggregate
    :math:`\bar\Delta_t` computed with the same weights.

    The official code reports accuracy at the average of the last two iterates
    :math:`(w_t + w_{t+1})/2` (at round 0, at :math:`w_1`); :meth:`evaluation_point`
    returns it from the new weights and this round's update, so the only state is the
    round count.

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
        self._rounds = 0

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
        eta = _step_size(self._client_sq_norm_sum / self._weight_sum, sq_norm(delta), self.eps)
        self._client_sq_norm_sum = 0.0
        self._weight_sum = 0.0
        self._rounds += 1
        return ServerStep(
            update=scaled(delta, eta), global_lr=eta, client_lr=None, hypergradient=0.0
        )

    def evaluation_point(
        self, new_params: Sequence[Tensor], update: Sequence[Tensor]
    ) -> list[Tensor]:
        r"""Return the reported iterate :math:`(w_t + w_{t+1})/2 = w_{t+1} - \text{update}/2`.

        Parameters
        ----------
        new_params
            :math:`w_{t+1}` (trainable parameters, after the step).
        update
            The ``update`` of the latest :meth:`step`.

        Returns
        -------
        list[Tensor]
            New tensors; :math:`w_1` itself after the first round, as in the official code.

        """
        if self._rounds <= 1:
            return clone_list(new_params)
        with torch.no_grad():
            return list(torch._foreach_add(list(new_params), list(update), alpha=-0.5))

    def state_dict(self) -> dict[str, Any]:
        """Return the round count and the current round's client statistics."""
        return {
            "client_sq_norm_sum": self._client_sq_norm_sum,
            "weight_sum": self._weight_sum,
            "rounds": self._rounds,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`."""
        require_keys(state, "client_sq_norm_sum", "weight_sum", "rounds")
        self._client_sq_norm_sum = float(state["client_sq_norm_sum"])
        self._weight_sum = float(state["weight_sum"])
        self._rounds = int(state["rounds"])
