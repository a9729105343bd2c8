r"""The clients' scale-free hypergradient of their own learning rate.

For any optimiser, the step :math:`s_{k-1} = \theta_k - \theta_{k-1}` depends on the
learning rate :math:`\eta` linearly, so the hypergradient of the next mini-batch loss is
:math:`\partial f_k(\theta_k)/\partial\eta = \langle g_k, s_{k-1}\rangle / \eta` (Baydin
et al. 2018, for SGD and Adam alike). Its normalised form, the *descent cosine*

.. math:: c_k = \cos(-g_k,\ s_{k-1}),

is positive while the last step still points downhill (the LR is too small) and
negative when it overshot (too large), whatever the model size, the optimiser or the
LR's scale. A client measures it at every step and reports the round's mean; the server
(:class:`~fedhyper.rules.auto.AutoLR`) turns that into the next round's LR. The LR is
not changed within the round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fedhyper.rules.auto import DESCENT_COSINE_REPORT, bounded_cosine
from fedhyper.rules.vector import sum_float64, zeros_like_list

__all__ = ["DescentCosine"]


class DescentCosine:
    r"""Measure the mean descent cosine of a round's local steps (a step controller).

    Plugs into :func:`fedhyper.training.train_local`; it reads the gradients right
    before each step and the parameters around it, and changes nothing. The first step
    of a round has no previous step and is not counted; steps across local epochs are.
    A step whose gradient or previous step is zero (or not finite) counts as 0.

    Memory: one parameter-sized buffer (the previous step, negated).

    Parameters
    ----------
    params
        The trainable parameters the optimiser steps.

    """

    def __init__(self, params: Sequence[Tensor]) -> None:
        self._params = list(params)
        if not self._params:
            raise ValueError("DescentCosine needs at least one parameter")
        # Before a step: theta_{k-1} - theta_k = -s_{k-1}; then a snapshot of theta_k.
        self._buffer = zeros_like_list(self._params)
        self._has_step = False
        self._sum = 0.0
        self._count = 0

    @property
    def mean(self) -> float:
        """Mean descent cosine over the counted steps (0 if none was counted)."""
        return self._sum / self._count if self._count else 0.0

    @property
    def count(self) -> int:
        """Number of counted steps."""
        return self._count

    def start_epoch(self) -> None:
        """Nothing to do: the previous step carries over from the last epoch."""

    def before_step(self) -> None:
        r"""Add :math:`\cos(-g_k, s_{k-1})`, then snapshot :math:`\theta_k`."""
        with torch.no_grad():
            if self._has_step:
                grads = [
                    torch.zeros_like(p) if p.grad is None else p.grad.detach() for p in self._params
                ]
                # <-g, s> = <g, -s>; the buffer holds -s.
                sums = torch._foreach_powsum(grads, 2, dtype=torch.float64)
                step_sums = torch._foreach_powsum(self._buffer, 2, dtype=torch.float64)
                dot = sum_float64(torch._foreach_mul(grads, self._buffer))
                values = torch.stack([dot, torch.stack(sums).sum(), torch.stack(step_sums).sum()])
                dot_value, grad_sq, step_sq = values.tolist()  # one synchronisation
                denominator = (grad_sq * step_sq) ** 0.5
                if denominator > 0.0:
                    self._sum += bounded_cosine(dot_value / denominator)
                self._count += 1
            torch._foreach_copy_(self._buffer, self._params)

    def after_step(self) -> None:
        r"""Turn the snapshot into :math:`-s_k = \theta_k - \theta_{k+1}`."""
        with torch.no_grad():
            torch._foreach_sub_(self._buffer, self._params)
        self._has_step = True

    def report(self) -> dict[str, float]:
        """Return the round's mean descent cosine, for the server's rule."""
        return {DESCENT_COSINE_REPORT: self.mean}

    def state_dict(self) -> dict[str, float]:
        """Nothing to keep: every round measures afresh."""
        return {}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Nothing to restore."""
