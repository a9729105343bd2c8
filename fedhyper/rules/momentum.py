r"""FedHyper-GM: the global hypergradient rule with server momentum (the reference's pick).

The accumulator moves along the agreement between the momentum of past updates and this
round's update, and scales the momentum added on top of the plain FedAvg step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from fedhyper.rules.base import ServerRule, ServerStep, require_keys, restore_tensors
from fedhyper.rules.hypergradient import check_bounds, clip, hypergradient_signal
from fedhyper.rules.vector import clone_list

__all__ = ["GlobalMomentumLR", "accumulator_for_global_lr"]


def accumulator_for_global_lr(global_lr: float, momentum: float) -> float:
    r"""Return the accumulator at which FedHyper-GM's long-run global LR is ``global_lr``.

    For a steady update :math:`\Delta`, :math:`m_t \to \Delta / (1 - \mu)`, so GM's step
    :math:`\Delta + acc\, m_t \to (1 + acc / (1 - \mu))\,\Delta`, and a global LR
    :math:`\alpha` needs :math:`acc = (1 - \mu)(\alpha - 1)`. Reading the logged
    :math:`1 + acc` as the global LR instead (:math:`acc = \alpha - 1`) is only right in the
    first round: at :math:`\alpha = 0.5`, :math:`\mu = 0.9` the step tends to
    :math:`-4\Delta`, a step backwards, which on Fashion-MNIST drove the accuracy to 2%.

    Parameters
    ----------
    global_lr : float
        :math:`\alpha`, the long-run multiple of :math:`\Delta` wanted.
    momentum : float
        :math:`\mu`, in ``[0, 1)``.

    Returns
    -------
    float
        :math:`(1 - \mu)(\alpha - 1)`; 0 (the reference's start) at :math:`\alpha = 1`.

    """
    return (1.0 - momentum) * (global_lr - 1.0)


class GlobalMomentumLR(ServerRule):
    r"""FedHyper-GM: hypergradient-scaled server momentum.

    .. math::

        t = 0:&\quad m_0 = \Delta_0,\quad acc = acc_{\text{init}},
                \quad w_1 = w_0 + (1 + acc_{\text{init}})\,\Delta_0, \\
        t > 0:&\quad acc_t = \operatorname{clip}\bigl(acc_{t-1}
                + \beta\, h(m_{t-1}, \Delta_t),\ acc_{\min}, acc_{\max}\bigr), \\
        &\quad m_t = \Delta_t + \mu\, m_{t-1}, \\
        &\quad w_{t+1} = w_t + \Delta_t + acc_t\, m_t,

    with :math:`h = \langle\cdot,\cdot\rangle` (reference) or :math:`\cos` (``normalised``).
    The logged global LR is :math:`1 + acc_t`, as in the reference: the weight of this
    round's update in its first round. An initial global LR :math:`\alpha_0` enters through
    :func:`accumulator_for_global_lr` (reference: :math:`acc_{\text{init}} = 0`, i.e.
    :math:`\alpha_0 = 1`).

    Parameters
    ----------
    hyper_lr
        :math:`\beta` (reference: 1).
    bounds
        :math:`(acc_{\min}, acc_{\max})` (reference: ``(-0.2, 4)``).
    momentum
        :math:`\mu` (reference: 0.9).
    normalised
        Use the cosine of :math:`m_{t-1}` and :math:`\Delta_t` instead of their inner product.
    initial_acc
        :math:`acc_{\text{init}}`, the accumulator before the first round (reference: 0);
        it must lie within ``bounds``.

    Raises
    ------
    ValueError
        If ``bounds`` is unordered or ``initial_acc`` lies outside it.

    """

    def __init__(
        self,
        hyper_lr: float = 1.0,
        bounds: tuple[float, float] = (-0.2, 4.0),
        momentum: float = 0.9,
        normalised: bool = False,
        initial_acc: float = 0.0,
    ) -> None:
        self.hyper_lr = float(hyper_lr)
        self.bounds = check_bounds("bounds", bounds)
        self.momentum = float(momentum)
        self.normalised = normalised
        if not self.bounds[0] <= initial_acc <= self.bounds[1]:
            raise ValueError(f"initial_acc must lie within {self.bounds}, got {initial_acc}")
        self._acc = float(initial_acc)
        self._momentum_buffer: list[Tensor] | None = None

    @property
    def accumulator(self) -> float:
        r""":math:`acc_t` after the latest round (``initial_acc`` before any)."""
        return self._acc

    def step(self, delta: Sequence[Tensor]) -> ServerStep:
        r"""Return :math:`\Delta_t + acc_t m_t`; see the class docstring."""
        signal = 0.0
        if self._momentum_buffer is None:
            self._momentum_buffer = clone_list(delta)
        else:
            signal = hypergradient_signal(self._momentum_buffer, delta, normalised=self.normalised)
            self._acc = clip(self._acc + self.hyper_lr * signal, self.bounds)
            with torch.no_grad():
                # m <- mu m + Delta, in place on the rule's own buffer.
                torch._foreach_mul_(self._momentum_buffer, self.momentum)
                torch._foreach_add_(self._momentum_buffer, list(delta))
        with torch.no_grad():
            update = list(torch._foreach_add(list(delta), self._momentum_buffer, alpha=self._acc))
        return ServerStep(
            update=update, global_lr=1.0 + self._acc, client_lr=None, hypergradient=signal
        )

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"acc": float, "momentum_buffer": list[Tensor] | None}``."""
        return {"acc": self._acc, "momentum_buffer": restore_tensors(self._momentum_buffer)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`."""
        require_keys(state, "acc", "momentum_buffer")
        self._acc = float(state["acc"])
        self._momentum_buffer = restore_tensors(state["momentum_buffer"])
