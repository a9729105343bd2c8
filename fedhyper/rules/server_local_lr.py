r"""FedHyper-SL: the server schedules the clients' local learning rate by hypergradient.

The same global hypergradient as FedHyper-G, but it moves the learning rate the clients
train with in the next round instead of the server's step size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from fedhyper.rules.base import ServerRule, ServerStep, require_keys, restore_tensors
from fedhyper.rules.hypergradient import check_bounds, clip, hypergradient_signal
from fedhyper.rules.vector import clone_list

__all__ = ["ServerLocalLR"]


class ServerLocalLR(ServerRule):
    r"""FedHyper-SL: server-side hypergradient schedule of the local learning rate.

    .. math::

        acc_0 = 0,\quad acc_t &= \operatorname{clip}\bigl(acc_{t-1}
            + \beta\, h(\Delta_t, \Delta_{t-1}),\ acc_{lo}, acc_{hi}\bigr)\ (t > 0), \\
        \eta_{l,t+1} &= \operatorname{clip}\bigl(\eta_0 (1 + acc_t),\
            \eta_0 r_{lo},\ \eta_0 r_{hi}\bigr), \\
        w_{t+1} &= w_t + \Delta_t,

    with :math:`h = \langle\cdot,\cdot\rangle` (reference) or :math:`\cos` (``normalised``).
    Round 1 trains with :math:`\eta_0`. ``step`` returns :math:`\eta_{l,t+1}` as
    ``client_lr``; the caller must send exactly that to every client of the next round.
    The reference rebuilt the LR from :math:`\eta_0` every round (so its SL was FedAvg);
    here the scheduled LR is what the rule hands out, round after round.

    Parameters
    ----------
    initial_client_lr
        :math:`\eta_0`.
    hyper_lr
        :math:`\beta` (reference: 1).
    acc_bounds
        :math:`(acc_{lo}, acc_{hi})`, default ``(-0.9, 9)``: the tightest accumulator clip
        that still lets :math:`\eta_0(1 + acc)` reach the whole LR range
        :math:`[\eta_0/10, 10\eta_0]` the reference allows, so clipping the accumulator
        only removes wind-up (the LR leaves a bound as soon as the signal turns) and
        never narrows the schedule. GM's ``(-0.2, 4)`` would silently shrink the range
        to :math:`[0.8\eta_0, 5\eta_0]` and make the LR clip dead.
    lr_bounds
        :math:`(r_{lo}, r_{hi})`, the client-LR clip as multiples of :math:`\eta_0`
        (reference: ``(0.1, 10)``).
    normalised
        Use the cosine of successive updates instead of their inner product.

    """

    def __init__(
        self,
        initial_client_lr: float,
        hyper_lr: float = 1.0,
        acc_bounds: tuple[float, float] = (-0.9, 9.0),
        lr_bounds: tuple[float, float] = (0.1, 10.0),
        normalised: bool = False,
    ) -> None:
        if initial_client_lr <= 0.0:
            raise ValueError(f"initial_client_lr must be positive, got {initial_client_lr}")
        self.base_client_lr = float(initial_client_lr)
        self.hyper_lr = float(hyper_lr)
        self.acc_bounds = check_bounds("acc_bounds", acc_bounds)
        low, high = check_bounds("lr_bounds", lr_bounds)
        self.lr_bounds = (low * self.base_client_lr, high * self.base_client_lr)
        self.normalised = normalised
        self._acc = 0.0
        self._previous: list[Tensor] | None = None

    @property
    def client_lr(self) -> float:
        r"""The local LR scheduled for the next round: :math:`\eta_0` before any round."""
        return clip(self.base_client_lr * (1.0 + self._acc), self.lr_bounds)

    def initial_client_lr(self) -> float:
        r"""Return :math:`\eta_0`, the local LR of the first round."""
        return self.base_client_lr

    def step(self, delta: Sequence[Tensor]) -> ServerStep:
        r"""Apply :math:`\Delta_t` as is and schedule the next local LR; see the class docstring."""
        signal = 0.0
        if self._previous is not None:
            signal = hypergradient_signal(delta, self._previous, normalised=self.normalised)
            self._acc = clip(self._acc + self.hyper_lr * signal, self.acc_bounds)
        self._previous = clone_list(delta)
        return ServerStep(
            update=clone_list(delta),
            global_lr=1.0,
            client_lr=self.client_lr,
            hypergradient=signal,
        )

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"acc": float, "previous_delta": list[Tensor] | None}``."""
        return {"acc": self._acc, "previous_delta": restore_tensors(self._previous)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`."""
        require_keys(state, "acc", "previous_delta")
        self._acc = float(state["acc"])
        self._previous = restore_tensors(state["previous_delta"])
