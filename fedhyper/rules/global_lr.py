r"""FedHyper-G: hypergradient descent on the global (server) learning rate.

The hypergradient of the loss with respect to the global LR :math:`\alpha` is
:math:`\partial F/\partial\alpha \approx -\langle \nabla F(w_t), \Delta_{t-1}\rangle`, and
:math:`-\nabla F(w_t)` is estimated by this round's update :math:`\Delta_t`; descending it
grows :math:`\alpha` while successive updates agree and shrinks it when they oppose.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from fedhyper.rules.base import ServerRule, ServerStep, require_keys, restore_tensors
from fedhyper.rules.hypergradient import check_bounds, clip, hypergradient_signal
from fedhyper.rules.vector import clone_list, scaled

__all__ = ["GlobalLR", "UniversalGlobalLR"]


class GlobalLR(ServerRule):
    r"""FedHyper-G: the global learning rate follows its hypergradient.

    .. math::

        t = 0:&\quad \alpha_0 \text{ as given}, \\
        t > 0:&\quad \alpha_t = \operatorname{clip}\bigl(\alpha_{t-1}
                + \beta_g\, h(\Delta_t, \Delta_{t-1}),\ \alpha_{\min}, \alpha_{\max}\bigr), \\
        &\quad w_{t+1} = w_t + \alpha_t \Delta_t,

    with :math:`h = \langle\cdot,\cdot\rangle` (reference) or :math:`\cos` (``normalised``).
    The *unscaled* :math:`\Delta_t` is kept as next round's :math:`\Delta_{t-1}`.

    Parameters
    ----------
    initial_lr
        :math:`\alpha_0`, used unclipped in round 0 (reference: 1).
    hyper_lr
        :math:`\beta_g` (reference: 1, with the raw inner product).
    bounds
        :math:`(\alpha_{\min}, \alpha_{\max})`; the reference clips :math:`\alpha` to
        ``(0.2, 5)``.
    normalised
        Replace the inner product by the cosine of successive updates, so the rule does
        not depend on model size or LR scale (then a hyper-LR around 0.1 is sensible).

    """

    def __init__(
        self,
        initial_lr: float = 1.0,
        hyper_lr: float = 1.0,
        bounds: tuple[float, float] = (0.2, 5.0),
        normalised: bool = False,
    ) -> None:
        self.initial_lr = float(initial_lr)
        self.hyper_lr = float(hyper_lr)
        self.bounds = check_bounds("bounds", bounds)
        self.normalised = normalised
        self._alpha = self.initial_lr
        self._previous: list[Tensor] | None = None

    @property
    def alpha(self) -> float:
        r"""The global learning rate used in the latest round (:math:`\alpha_0` before any)."""
        return self._alpha

    def step(self, delta: Sequence[Tensor]) -> ServerStep:
        r"""Scale :math:`\Delta_t` by the updated global LR; see the class docstring."""
        signal = 0.0
        if self._previous is not None:
            signal = hypergradient_signal(delta, self._previous, normalised=self.normalised)
            self._alpha = clip(self._alpha + self.hyper_lr * signal, self.bounds)
        self._previous = clone_list(delta)
        return ServerStep(
            update=scaled(delta, self._alpha),
            global_lr=self._alpha,
            client_lr=None,
            hypergradient=signal,
        )

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"alpha": float, "previous_delta": list[Tensor] | None}``."""
        return {"alpha": self._alpha, "previous_delta": restore_tensors(self._previous)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`."""
        require_keys(state, "alpha", "previous_delta")
        self._alpha = float(state["alpha"])
        self._previous = restore_tensors(state["previous_delta"])


class UniversalGlobalLR(GlobalLR):
    r"""The "universal" FedHyper scale applied before another server optimiser.

    The reference wraps FedAdam (and, per the paper, FedAvgM and FedExP) by scaling the
    aggregated update before that optimiser's own step:

    .. math::

        acc_0 = 0,\quad acc_t = \operatorname{clip}\bigl(acc_{t-1}
            + \beta\, h(\Delta_t, \Delta_{t-1}),\ -0.2,\ 4\bigr),\quad
        \text{update} = (1 + acc_t)\,\Delta_t .

    This is :class:`GlobalLR` with :math:`\alpha = 1 + acc`, :math:`\alpha_0 = 1` and
    bounds ``(1 + acc_low, 1 + acc_high)``. The returned ``update`` is NOT a model step:
    the caller feeds it, in place of :math:`\Delta_t`, to FedAdam/FedAvgM/FedExP (as a
    pseudo-gradient, mind the sign). The unscaled :math:`\Delta_t` is kept for the next
    inner product, as in the reference.

    Parameters
    ----------
    hyper_lr
        :math:`\beta` (reference: 1).
    acc_bounds
        Clip of the accumulator :math:`acc` (reference: ``(-0.2, 4)``).
    normalised
        Use the cosine of successive updates instead of their inner product.

    """

    def __init__(
        self,
        hyper_lr: float = 1.0,
        acc_bounds: tuple[float, float] = (-0.2, 4.0),
        normalised: bool = False,
    ) -> None:
        low, high = check_bounds("acc_bounds", acc_bounds)
        super().__init__(
            initial_lr=1.0, hyper_lr=hyper_lr, bounds=(1.0 + low, 1.0 + high), normalised=normalised
        )
