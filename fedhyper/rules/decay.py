r"""Decay-G and Decay-SL: fixed exponential learning-rate schedules (FedHyper baselines).

Round :math:`t` (counted from 0) uses :math:`0.995^t` times the initial rate, either as the
global step size (Decay-G) or as the clients' local learning rate (Decay-SL).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from fedhyper.rules.base import ServerRule, ServerStep, require_keys
from fedhyper.rules.vector import clone_list, scaled

__all__ = ["DecayGlobal", "DecayLocal"]


def _check_decay(decay: float) -> float:
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must lie in (0, 1], got {decay}")
    return float(decay)


class DecayGlobal(ServerRule):
    r"""Decay-G: :math:`\alpha_t = \alpha_0 \gamma^t`, :math:`w_{t+1} = w_t + \alpha_t \Delta_t`.

    Parameters
    ----------
    initial_lr
        :math:`\alpha_0` (reference: 1).
    decay
        :math:`\gamma` (reference: 0.995).

    """

    def __init__(self, initial_lr: float = 1.0, decay: float = 0.995) -> None:
        self.initial_lr = float(initial_lr)
        self.decay = _check_decay(decay)
        self._round = 0

    def step(self, delta: Sequence[Tensor]) -> ServerStep:
        r"""Return :math:`\alpha_0 \gamma^t \Delta_t` for the current round :math:`t`."""
        alpha = self.initial_lr * self.decay**self._round
        self._round += 1
        return ServerStep(
            update=scaled(delta, alpha), global_lr=alpha, client_lr=None, hypergradient=0.0
        )

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"round": int}``, the index of the next round."""
        return {"round": self._round}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`."""
        require_keys(state, "round")
        self._round = int(state["round"])


class DecayLocal(ServerRule):
    r"""Decay-SL: clients of round :math:`t` train with :math:`\eta_0\gamma^t`; FedAvg step.

    The server step is :math:`w_{t+1} = w_t + \Delta_t`. ``initial_client_lr()`` is
    :math:`\eta_0` (round 0) and ``step`` at round :math:`t` returns
    :math:`\eta_0 \gamma^{t+1}` for round :math:`t + 1`. (The reference sets
    :math:`\eta_0\gamma^{t}` after round :math:`t`, i.e. one round later, and then
    discards it by resetting every round: Decay-SL there is FedAvg.)

    Parameters
    ----------
    initial_client_lr
        :math:`\eta_0`.
    decay
        :math:`\gamma` (reference: 0.995).

    """

    def __init__(self, initial_client_lr: float, decay: float = 0.995) -> None:
        self.base_client_lr = float(initial_client_lr)
        self.decay = _check_decay(decay)
        self._round = 0

    def initial_client_lr(self) -> float:
        r"""Return :math:`\eta_0`, the local LR of round 0."""
        return self.base_client_lr

    def step(self, delta: Sequence[Tensor]) -> ServerStep:
        r"""Apply :math:`\Delta_t` as is and return next round's :math:`\eta_0\gamma^{t+1}`."""
        self._round += 1
        return ServerStep(
            update=clone_list(delta),
            global_lr=1.0,
            client_lr=self.base_client_lr * self.decay**self._round,
            hypergradient=0.0,
        )

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"round": int}``, the index of the next round."""
        return {"round": self._round}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`."""
        require_keys(state, "round")
        self._round = int(state["round"])
