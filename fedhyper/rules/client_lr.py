r"""FedHyper-CL: hypergradient descent on the local learning rate, after every local step.

Runs on the client, between ``optimizer.step()`` calls, through the step-controller hooks
of the training loop (``start_epoch``/``before_step``/``after_step``). It compares each
local step :math:`s_k` with the previous global update :math:`\Delta_{t-1}` (server
agreement) and with the previous local step (local agreement).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from fedhyper.rules.hypergradient import check_bounds, clip
from fedhyper.rules.vector import sum_float64, zeros_like_list

__all__ = ["HypergradientLocalLR"]


class HypergradientLocalLR:
    r"""FedHyper-CL: per-step hypergradient schedule of the client's learning rate.

    With :math:`s_k = \theta_{\text{after }k} - \theta_{\text{before }k}`, and starting from
    :math:`\beta = \beta_{\text{init}}` (1 unless carried over), :math:`s_{\text{prev}} =
    \Delta_{t-1}`, after each counted step :math:`k`:

    .. math::

        x &= c\,\langle s_k, \Delta_{t-1}\rangle, \qquad
        y = \langle s_k, s_{\text{prev}}\rangle, \\
        \gamma &= \min(\gamma_{\max},\ 1 + x + y), \qquad
        \beta \leftarrow \operatorname{clip}(\gamma\beta,\ \beta_{lo},\ \beta_{hi}), \\
        \text{lr} &= \eta_0\,\beta, \qquad s_{\text{prev}} \leftarrow s_k .

    The new LR applies from the next step on. With ``global_delta=None`` (first round)
    both :math:`\Delta_{t-1}` and the initial :math:`s_{\text{prev}}` are zero.

    Skipping (``skip_first_batch``, the reference's behaviour): the first step of every
    local epoch is taken with the current LR but is not counted, i.e. :math:`x, y` are
    not computed, :math:`\beta` and the LR stay as they are, and :math:`s_{\text{prev}}`
    is NOT replaced (the epoch's second step is compared with the previous epoch's last
    counted step, or with :math:`\Delta_{t-1}` at the start of the round).

    Memory: two parameter-sized buffers, allocated once (the snapshot before a step and
    the previous step); :math:`\Delta_{t-1}` is read, never copied nor modified.

    Parameters
    ----------
    params
        The trainable parameters, in the same order as ``global_delta``.
    optimizer
        Optimizer stepping ``params`` (SGD with or without momentum, Adam, ...); the LR
        of all its parameter groups is set to :math:`\eta_0\beta`, now and after each
        counted step.
    base_lr
        :math:`\eta_0`.
    global_delta
        :math:`\Delta_{t-1}`, the server's last unscaled aggregated update (new minus
        old), or ``None`` in the first round.
    coupling
        :math:`c` (reference: 0.1 / number of clients sampled this round).
    skip_first_batch
        Do not count the first step of each local epoch (reference: yes).
    multiplier
        Initial :math:`\beta`: 1 reproduces the reference's per-round reset; pass the
        previous round's :attr:`multiplier` to carry it over.
    bounds
        :math:`(\beta_{lo}, \beta_{hi})` (reference: ``(0.1, 10)``).
    growth_cap
        :math:`\gamma_{\max}` (reference: 1.1, at most +10% a step).

    """

    def __init__(
        self,
        params: Sequence[Tensor],
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        global_delta: Sequence[Tensor] | None,
        coupling: float,
        skip_first_batch: bool = True,
        multiplier: float = 1.0,
        bounds: tuple[float, float] = (0.1, 10.0),
        growth_cap: float = 1.1,
    ) -> None:
        self._params = list(params)
        if not self._params:
            raise ValueError("HypergradientLocalLR needs at least one parameter")
        self._optimizer = optimizer
        self.base_lr = float(base_lr)
        self.coupling = float(coupling)
        self.skip_first_batch = skip_first_batch
        self.bounds = check_bounds("bounds", bounds)
        self.growth_cap = float(growth_cap)
        self._delta = None if global_delta is None else self._match(global_delta)
        # Two buffers used in turn: one receives the next snapshot while the other holds
        # the previous step. They store the NEGATED step theta_before - theta_after, which
        # one in-place subtraction yields; the signs cancel in y and are undone in x.
        self._buffers = (zeros_like_list(self._params), zeros_like_list(self._params))
        self._current = 0
        self._prev_is_step = False  # until the first counted step, s_prev is Delta_{t-1}
        self._first_in_epoch = True
        self._skip_this_step = False
        self._beta = clip(float(multiplier), self.bounds)
        self._set_lr()
        self._lr_count = 0
        self._lr_first = self._lr_last = self._lr_sum = self._lr_min = self._lr_max = 0.0
        self._updates = 0
        self._x_sum = self._y_sum = 0.0

    def _match(self, delta: Sequence[Tensor]) -> list[Tensor]:
        if len(delta) != len(self._params):
            raise ValueError(f"{len(delta)} global_delta tensors for {len(self._params)} params")
        for d, p in zip(delta, self._params, strict=True):
            if d.shape != p.shape:
                raise ValueError(f"global_delta shape {tuple(d.shape)} != param {tuple(p.shape)}")
        # A no-op when device and dtype already match (the usual case): no copy.
        return [
            d.detach().to(device=p.device, dtype=p.dtype)
            for d, p in zip(delta, self._params, strict=True)
        ]

    @property
    def multiplier(self) -> float:
        r"""Current :math:`\beta`; the LR of the next step is ``base_lr * multiplier``."""
        return self._beta

    @property
    def lr(self) -> float:
        r"""Current learning rate :math:`\eta_0\beta`."""
        return self.base_lr * self._beta

    def _set_lr(self) -> None:
        lr = self.lr
        for group in self._optimizer.param_groups:
            if isinstance(group["lr"], Tensor):  # tensor LRs (e.g. capturable Adam) stay tensors
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def start_epoch(self) -> None:
        """Mark the next step as the first of a local epoch."""
        self._first_in_epoch = True

    def before_step(self) -> None:
        """Snapshot the parameters (into a preallocated buffer) unless this step is skipped."""
        self._skip_this_step = self.skip_first_batch and self._first_in_epoch
        self._first_in_epoch = False
        if not self._skip_this_step:
            with torch.no_grad():
                torch._foreach_copy_(self._buffers[self._current], self._params)

    def after_step(self) -> None:
        r"""Record the step's LR and, for a counted step, update :math:`\beta` and the LR."""
        self._record_lr(self.lr)
        if self._skip_this_step:
            return
        neg_step, spare = self._buffers[self._current], self._buffers[1 - self._current]
        with torch.no_grad():
            torch._foreach_sub_(neg_step, self._params)  # theta_before - theta_after = -s_k
            # Products go into `spare`, not fresh tensors: no allocation per step. It holds
            # -s_prev, needed only for y, so y comes first; then it is scratch for x (the
            # next snapshot overwrites it anyway).
            prev_dot = delta_dot = neg_step[0].new_zeros((), dtype=torch.float64)
            if self._prev_is_step:
                torch._foreach_mul_(spare, neg_step)
                prev_dot = sum_float64(spare)  # <-s_prev, -s_k>
            if self._delta is not None:
                torch._foreach_copy_(spare, neg_step)
                torch._foreach_mul_(spare, self._delta)
                delta_dot = -sum_float64(spare)  # <s_k, Delta>
            step_dot_prev, step_dot_delta = torch.stack([prev_dot, delta_dot]).tolist()  # 1 sync
        x = self.coupling * step_dot_delta
        # Until the first counted step s_prev is Delta_{t-1} itself (zero when None).
        y = step_dot_prev if self._prev_is_step else step_dot_delta
        gamma = min(self.growth_cap, 1.0 + x + y)
        self._beta = clip(gamma * self._beta, self.bounds)
        self._set_lr()
        self._current = 1 - self._current
        self._prev_is_step = True
        self._updates += 1
        self._x_sum += x
        self._y_sum += y

    def _record_lr(self, lr: float) -> None:
        if self._lr_count == 0:
            self._lr_first = self._lr_min = self._lr_max = lr
        self._lr_count += 1
        self._lr_last = lr
        self._lr_sum += lr
        self._lr_min = min(self._lr_min, lr)
        self._lr_max = max(self._lr_max, lr)

    def report(self) -> dict[str, float]:
        r"""Return the means of :math:`x` and :math:`y` and the final :math:`\beta`."""
        stats = self.stats()
        return {
            "x-mean": stats["x_mean"],
            "y-mean": stats["y_mean"],
            "multiplier": stats["multiplier"],
        }

    def state_dict(self) -> dict[str, float]:
        r"""Return :math:`\beta`, which a client may carry into its next round."""
        return {"multiplier": self._beta}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        r"""Start from a carried :math:`\beta` (clipped to the bounds) and set the LR to match."""
        self._beta = clip(float(state["multiplier"]), self.bounds)
        self._set_lr()

    def stats(self) -> dict[str, float]:
        r"""Summarise the round so far.

        Returns
        -------
        dict[str, float]
            ``lr_first``, ``lr_last``, ``lr_mean``, ``lr_min``, ``lr_max``: the LRs the
            optimizer steps were taken with (all equal to the current LR before any
            step); ``x_mean``, ``y_mean``: means of the two terms over counted steps
            (0 if none); ``multiplier``: the final :math:`\beta`; ``steps`` and
            ``counted_steps``.

        """
        steps = self._lr_count
        return {
            "lr_first": self._lr_first if steps else self.lr,
            "lr_last": self._lr_last if steps else self.lr,
            "lr_mean": self._lr_sum / steps if steps else self.lr,
            "lr_min": self._lr_min if steps else self.lr,
            "lr_max": self._lr_max if steps else self.lr,
            "x_mean": self._x_sum / self._updates if self._updates else 0.0,
            "y_mean": self._y_sum / self._updates if self._updates else 0.0,
            "multiplier": self._beta,
            "steps": float(steps),
            "counted_steps": float(self._updates),
        }
