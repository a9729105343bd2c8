r"""The clients' scale-free hypergradient of their own learning rate.

For any optimiser, the step :math:`s_{k-1} = \theta_k - \theta_{k-1}` depends on the
learning rate :math:`\eta` linearly, so the hypergradient of the next mini-batch loss is
:math:`\partial f_k(\theta_k)/\partial\eta = \langle g_k, s_{k-1}\rangle / \eta` (Baydin
et al. 2018, for SGD and Adam alike). Its normalised form, the *descent cosine*

.. math:: c_k = \cos(-g_k,\ s_{k-1}),

is positive while the last step still points downhill (the LR is too small) and
negative when it overshot (too large), whatever the model size, the optimiser or the
LR's scale. It is greedy: the hypergradient of the next mini-batch's loss only.

The *round* horizon measures instead

.. math:: r_k = \cos(-g_k,\ \theta_k - \theta_0),

the gradient against the round's displacement so far. Every optimiser's displacement
after :math:`k` steps at a constant LR is, to first order, proportional to :math:`\eta`,
so :math:`r_k` is the normalised hypergradient of :math:`f_k(\theta_k)` with respect to
the LR held over the whole round, and its mean over the round that of the mean
training loss along the round's trajectory: the LR the round trains with, judged over
the round. Measured on the four presets (docs/benchmarks.md), both horizons settle the
client LR at nearly the same point; under the current defaults, the round horizon kept
CIFAR-10's client LR near its preset value where the one-step one let it fall 2.5x.

A client measures the chosen cosine at every step and reports the round's mean; the server
(:class:`~fedhyper.rules.auto.AutoLR`) turns that into the next round's LR. The LR is
not changed within the round.

Given the step the server applied last round, :math:`d_{t-1} = w_t - w_{t-1}`, a client
also measures the same cosine for the global LR before its first local step,
:math:`\cos(-\nabla f_i(w_t), d_{t-1})` on its first mini-batch: Baydin et al.'s
hypergradient of the global LR, whatever optimiser the clients use. One mini-batch
gradient is noisy, and the mean of noisy cosines is shrunk toward 0 by the noise, so
the *round* global horizon sums the round's gradients first,
:math:`\cos(-\sum_k g_k, d_{t-1})`: every :math:`\theta_k` moves with :math:`w_t`, so
this is the normalised hypergradient of the round's summed training loss with respect
to the global LR, with the noise of one gradient divided by about :math:`\sqrt K`. It
is the raw gradients' sum, not the update, so Adam's preconditioning does not enter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fedhyper.rules.auto import DESCENT_COSINE_REPORT, GLOBAL_COSINE_REPORT, bounded_cosine
from fedhyper.rules.vector import sum_float64, zeros_like_list

__all__ = ["HORIZONS", "DescentCosine"]

HORIZONS = ("step", "round")
"""What the gradient is compared with: the last step, or the round's displacement so far."""


class DescentCosine:
    r"""Measure the mean descent cosine of a round's local steps (a step controller).

    Plugs into :func:`fedhyper.training.train_local`; it reads the gradients right
    before each step and the parameters around it, and changes nothing. The first step
    of a round has no previous step and is not counted; steps across local epochs are.
    A step whose gradient or previous step (or displacement) is zero (or not finite)
    counts as 0. With ``server_step``, the first step's gradient (``global_horizon``
    ``"step"``) or the sum of the round's gradients (``"round"``) also gives the global
    cosine :math:`\cos(-g, d_{t-1})` (0 when either is zero).

    Memory: one parameter-sized buffer (the previous step, negated) with the ``step``
    horizon, two (:math:`\theta_0` and the displacement) with ``round``; :math:`d_{t-1}`
    when given, and the gradients' sum with the ``round`` global horizon.

    Parameters
    ----------
    params
        The trainable parameters the optimiser steps.
    server_step
        :math:`d_{t-1}`, matching ``params``, or ``None``.
    horizon
        ``"step"`` (:math:`c_k`) or ``"round"`` (:math:`r_k`); see the module.
    global_horizon
        ``"step"`` (the first mini-batch) or ``"round"`` (all of them); see the module.

    Raises
    ------
    ValueError
        With no parameters, a ``server_step`` of other shapes, or an unknown horizon.

    """

    def __init__(
        self,
        params: Sequence[Tensor],
        server_step: Sequence[Tensor] | None = None,
        horizon: str = "round",
        global_horizon: str = "round",
    ) -> None:
        self._params = list(params)
        if not self._params:
            raise ValueError("DescentCosine needs at least one parameter")
        for name, value in (("horizon", horizon), ("global_horizon", global_horizon)):
            if value not in HORIZONS:
                raise ValueError(f"{name} must be one of {HORIZONS}, got {value!r}")
        self.horizon = horizon
        self.global_horizon = global_horizon
        if server_step is not None and [d.shape for d in server_step] != [
            p.shape for p in self._params
        ]:
            raise ValueError("server_step must match the parameters' shapes")
        # A no-op when device and dtype already match (the usual case): no copy.
        self._server_step = (
            None
            if server_step is None
            else [
                d.detach().to(device=p.device, dtype=p.dtype)
                for d, p in zip(server_step, self._params, strict=True)
            ]
        )
        self._global: float | None = None
        # Step horizon: before a step theta_{k-1} - theta_k = -s_{k-1}, then a snapshot
        # of theta_k. Round horizon: theta_0 - theta_k, recomputed from the origin.
        self._buffer = zeros_like_list(self._params)
        self._origin = zeros_like_list(self._params) if horizon == "round" else None
        self._gradient_sum = (
            zeros_like_list(self._params)
            if server_step is not None and global_horizon == "round"
            else None
        )
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

    @property
    def global_cosine(self) -> float | None:
        r""":math:`\cos(-g, d_{t-1})` so far (``None`` without ``server_step`` or a step)."""
        if self._gradient_sum is not None and self._server_step is not None and self._has_step:
            return -_cosine(self._gradient_sum, self._server_step)
        return self._global

    def start_epoch(self) -> None:
        """Nothing to do: the previous step carries over from the last epoch."""

    def before_step(self) -> None:
        r"""Add this step's cosine; snapshot :math:`\theta_k` (``step``) or :math:`\theta_0`."""
        with torch.no_grad():
            grads = [
                torch.zeros_like(p) if p.grad is None else p.grad.detach() for p in self._params
            ]
            if self._has_step:
                if self._origin is not None:
                    torch._foreach_copy_(self._buffer, self._origin)
                    torch._foreach_sub_(self._buffer, self._params)
                # <-g, s> = <g, -s>; the buffer holds -s (or theta_0 - theta_k).
                self._sum += _cosine(grads, self._buffer)
                self._count += 1
            elif self._server_step is not None and self._gradient_sum is None:
                self._global = -_cosine(grads, self._server_step)
            if self._gradient_sum is not None:
                torch._foreach_add_(self._gradient_sum, grads)
            if self._origin is None:
                torch._foreach_copy_(self._buffer, self._params)
            elif not self._has_step:
                torch._foreach_copy_(self._origin, self._params)

    def after_step(self) -> None:
        r"""Turn the snapshot into :math:`-s_k = \theta_k - \theta_{k+1}` (``step``)."""
        if self._origin is None:
            with torch.no_grad():
                torch._foreach_sub_(self._buffer, self._params)
        self._has_step = True

    def report(self) -> dict[str, float]:
        """Return the round's mean descent cosine, and the global one if measured."""
        report = {DESCENT_COSINE_REPORT: self.mean}
        global_cosine = self.global_cosine
        if global_cosine is not None:
            report[GLOBAL_COSINE_REPORT] = global_cosine
        return report

    def state_dict(self) -> dict[str, float]:
        """Nothing to keep: every round measures afresh."""
        return {}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Nothing to restore."""


def _cosine(first: list[Tensor], second: list[Tensor]) -> float:
    """Return the bounded cosine of two tensor lists, 0 when either is zero."""
    dot = sum_float64(torch._foreach_mul(first, second))
    first_sq = torch.stack(torch._foreach_powsum(first, 2, dtype=torch.float64)).sum()
    second_sq = torch.stack(torch._foreach_powsum(second, 2, dtype=torch.float64)).sum()
    values = torch.stack([dot, first_sq, second_sq]).tolist()  # one synchronisation
    denominator = (values[1] * values[2]) ** 0.5
    return bounded_cosine(values[0] / denominator) if denominator > 0.0 else 0.0
