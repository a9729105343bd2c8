r"""HDET's auto-LR controller for one scalar hyperparameter (LR, weight decay, FedProx μ, ...).

Each round (or averaging period) the replicas train with :math:`\eta_r = \bar\eta\,\rho_{\pi(r)}`
(:mod:`fedhyper.rules.hdet_spread`) and report a lower-is-better signal :math:`L_r` (the
paper's: their mean training loss). After a warm-up, the zero-order hypergradient moves the
shared base value :math:`\bar\eta` toward the replicas that did better:

.. math::

    s_r &= (\bar L - L_r) / \sigma, \qquad w = \operatorname{softmax}(s), \qquad
    \Delta = \textstyle\sum_r w_r \eta_r - \tfrac{1}{M}\sum_r \eta_r, \\
    v &\leftarrow \beta v + (1 - \beta)\Delta, \qquad
    \bar\eta \leftarrow \operatorname{clip}\big(\bar\eta (1 - \gamma) + \lambda v\big).

Deviations from the official code (stated in ALGORITHMS.md): the decay is
:math:`\gamma = 1 - (\eta_{\text{floor}} / \bar\eta_{\text{warm end}})^{1/K}`, which
shrinks :math:`\bar\eta` (the code's formula grows it with OneCycle's defaults); the
spread applies from the first round; the permutation is a pure function of (seed, round,
name). Beyond the paper: :math:`\bar\eta` is this controller's own state, not the mean of
the replicas' values (they coincide for a linear spread with every replica answering),
so a log spread or a partial answer does not shift it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedhyper.rules.base import require_keys
from fedhyper.rules.hdet_spread import SpreadKind, assigned_multipliers, check_width
from fedhyper.rules.hypergradient import check_bounds

__all__ = ["HDETSettings", "MetaStep", "SpreadHyperparameter", "decay_rate", "loss_weights"]


@dataclass(frozen=True)
class HDETSettings:
    r"""Settings shared by every spread hyperparameter of a run (defaults: the paper's).

    Attributes
    ----------
    width
        Spread width :math:`a` (paper: 1/9, i.e. multipliers in [8/9, 10/9]); 0 turns
        the spread off.
    kind
        ``"linear"`` (paper) or ``"log"``, see :mod:`fedhyper.rules.hdet_spread`.
    warmup
        Number of updates (rounds) before the first meta-update; :math:`\bar\eta` is held
        at its initial value until then.
    momentum
        :math:`\beta` (paper: 0.9).
    meta_lr
        :math:`\lambda` (paper: 0.5); 0 keeps :math:`\bar\eta` fixed but for the decay
        (the spread without auto-LR).
    temperature
        :math:`\sigma`, in units of the signal (paper: 0.1).
    seed
        Seed of the per-round permutations.

    """

    width: float = 1.0 / 9.0
    kind: SpreadKind = "linear"
    warmup: int = 0
    momentum: float = 0.9
    meta_lr: float = 0.5
    temperature: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        check_width(self.width, self.kind)
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {self.momentum}")
        if not (math.isfinite(self.meta_lr) and self.meta_lr >= 0.0):
            raise ValueError(f"meta_lr must be finite and >= 0, got {self.meta_lr}")
        if not (math.isfinite(self.temperature) and self.temperature > 0.0):
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")


@dataclass(frozen=True)
class MetaStep:
    r"""What one update of a :class:`SpreadHyperparameter` did, for logging.

    Attributes
    ----------
    applied
        Whether the meta-update ran (past the warm-up, two or more answers, one or more
        of them finite); when ``False`` nothing but the update count changed.
    delta
        :math:`\Delta`, the zero-order hypergradient (0 when not applied).
    velocity
        :math:`v` after the update.
    base
        :math:`\bar\eta` after the update.

    """

    applied: bool
    delta: float
    velocity: float
    base: float


def decay_rate(start: float, floor: float | None, steps: int | None) -> float:
    r"""Return the decay :math:`\gamma = 1 - (\eta_{\text{floor}}/\eta_{\text{start}})^{1/K}`.

    :math:`(1 - \gamma)^K = \eta_{\text{floor}}/\eta_{\text{start}}`: the decay alone takes
    :math:`\bar\eta` from ``start`` down to ``floor`` in :math:`K` = ``steps`` updates, so
    :math:`\gamma \in [0, 1)` whenever ``0 < floor <= start``.

    Raises
    ------
    ValueError
        If only one of ``floor`` and ``steps`` is given, ``steps < 1``, or ``floor`` is
        outside ``(0, start]``.

    """
    if floor is None and steps is None:
        return 0.0
    if floor is None or steps is None:
        raise ValueError("floor and decay_steps must be given together (or neither)")
    if steps < 1:
        raise ValueError(f"decay_steps must be >= 1, got {steps}")
    if not 0.0 < floor <= start:
        raise ValueError(f"floor must lie in (0, {start}] (the initial value), got {floor}")
    return 1.0 - float((floor / start) ** (1.0 / steps))


def loss_weights(losses: Sequence[float], temperature: float) -> list[float]:
    r"""Return :math:`w = \operatorname{softmax}((\bar L - L) / \sigma)`; non-finite losses get 0.

    A NaN or infinite loss (a replica that diverged) gets weight 0, the limit of the
    softmax as its loss grows without bound; the other weights are the softmax over the
    finite losses alone. The softmax ignores shifts, so :math:`\bar L` (the mean of the
    finite losses) is replaced by their minimum, which keeps every exponent :math:`\le 0`.

    Raises
    ------
    ValueError
        If no loss is finite.

    """
    finite = [loss for loss in losses if math.isfinite(loss)]
    if not finite:
        raise ValueError("loss_weights needs at least one finite loss")
    best = min(finite)
    scores = [
        math.exp((best - loss) / temperature) if math.isfinite(loss) else 0.0 for loss in losses
    ]
    total = math.fsum(scores)
    return [score / total for score in scores]


class SpreadHyperparameter:
    r"""HDET's controller of one positive scalar hyperparameter, spread over the replicas.

    Call :meth:`values` for each round's per-replica values, train, then :meth:`update`
    with the values and signals of the replicas that answered (any subset of the round's
    replicas, in any order). An update changes :math:`v` and :math:`\bar\eta` only when

    * the warm-up is over (``settings.warmup`` updates have been made before it), and
    * two or more replicas answered (zero or one answer carries no comparison: the round
      leaves :math:`v` and :math:`\bar\eta`, decay included, unchanged), and
    * at least one answered signal is finite.

    A replica whose signal is NaN or infinite (it diverged) gets softmax weight 0 but its
    value stays in the mean :math:`\tfrac1M\sum_r \eta_r` (:math:`M` = answered
    replicas), so it pulls :math:`\bar\eta` away from its own value. The maths runs in
    Python floats (float64), so a run is bit-for-bit reproducible.

    Parameters
    ----------
    name
        Name of the hyperparameter; it selects the permutation stream, so each spread
        hyperparameter of a run needs its own name.
    initial
        :math:`\bar\eta_0 > 0`. It is held through the warm-up, so it is also
        :math:`\bar\eta_{\text{warm end}}` in the decay.
    settings
        Spread and meta-update settings (default: the paper's).
    floor
        :math:`\eta_{\text{floor}}` of the decay, in ``(0, initial]``; it also bounds
        :math:`\bar\eta` from below, so the decay never takes it past the floor.
        ``None``: no decay.
    decay_steps
        :math:`K`, the number of meta-updates after the warm-up over which the decay
        alone brings :math:`\bar\eta` to the floor. Given with ``floor`` or not at all.
    bounds
        ``(low, high)`` that :math:`\bar\eta` is clipped to; ``0 <= low <= initial <= high``.

    """

    def __init__(
        self,
        name: str,
        initial: float,
        settings: HDETSettings | None = None,
        *,
        floor: float | None = None,
        decay_steps: int | None = None,
        bounds: tuple[float, float] = (0.0, math.inf),
    ) -> None:
        initial = float(initial)
        if not (math.isfinite(initial) and initial > 0.0):
            raise ValueError(f"initial value of {name!r} must be finite and > 0, got {initial}")
        low, high = check_bounds(f"bounds of {name!r}", bounds)
        if not 0.0 <= low <= initial <= high:
            raise ValueError(
                f"bounds of {name!r} must satisfy 0 <= low <= initial ({initial}) <= high, "
                f"got {bounds}"
            )
        self.name = name
        self.settings = settings if settings is not None else HDETSettings()
        self.decay = decay_rate(initial, floor, decay_steps)
        self.bounds = (low if floor is None else max(low, float(floor)), high)
        self._base = initial
        self._velocity = 0.0
        self._updates = 0

    @property
    def base(self) -> float:
        r""":math:`\bar\eta`, the shared base value the spread is centred on."""
        return self._base

    @property
    def velocity(self) -> float:
        """:math:`v`, the momentum of the meta-update."""
        return self._velocity

    def values(self, round_index: int, num_replicas: int) -> list[float]:
        r"""Return :math:`\bar\eta\,\rho_{\pi(i)}` for replicas ``i = 0 .. M-1`` of a round.

        A pure function of the current :math:`\bar\eta` and the arguments.
        """
        s = self.settings
        multipliers = assigned_multipliers(
            num_replicas, s.width, s.kind, s.seed, round_index, self.name
        )
        return [self._base * rho for rho in multipliers]

    def update(self, values: Sequence[float], losses: Sequence[float]) -> MetaStep:
        r"""Count one round and, when due, apply the meta-update (see the class docstring).

        Parameters
        ----------
        values
            :math:`\eta_r` the answering replicas trained with (from :meth:`values`).
        losses
            Their signals :math:`L_r`, lower is better, in the same order.

        """
        if len(values) != len(losses):
            raise ValueError(f"got {len(values)} values but {len(losses)} losses")
        if not all(math.isfinite(value) for value in values):
            raise ValueError(f"values of {self.name!r} must be finite, got {list(values)}")
        due = self._updates >= self.settings.warmup
        self._updates += 1
        if not due or len(values) < 2 or not any(math.isfinite(loss) for loss in losses):
            return MetaStep(applied=False, delta=0.0, velocity=self._velocity, base=self._base)
        s = self.settings
        weights = loss_weights(losses, s.temperature)
        uniform = 1.0 / len(values)
        # Σ (w_r − 1/M) η_r rather than Σ w_r η_r − mean(η): equal losses give w_r == 1/M
        # exactly, so Δ is exactly 0 and the state does not drift by rounding.
        delta = math.fsum((w - uniform) * value for w, value in zip(weights, values, strict=True))
        self._velocity = s.momentum * self._velocity + (1.0 - s.momentum) * delta
        moved = self._base * (1.0 - self.decay) + s.meta_lr * self._velocity
        self._base = min(max(moved, self.bounds[0]), self.bounds[1])
        return MetaStep(applied=True, delta=delta, velocity=self._velocity, base=self._base)

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"base": float, "velocity": float, "updates": int}`` (plain Python values)."""
        return {"base": self._base, "velocity": self._velocity, "updates": self._updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`."""
        require_keys(state, "base", "velocity", "updates")
        self._base = float(state["base"])
        self._velocity = float(state["velocity"])
        self._updates = int(state["updates"])
