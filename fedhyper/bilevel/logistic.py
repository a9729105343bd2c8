"""Multinomial logistic regression with one L2 weight per parameter, over shards.

Lower level ``h(x, θ) = Σ_k p_k CE_k(x) + ½ Σ e^θ ⊙ x²`` with ``x`` the ``d × C``
weight matrix (no bias) and ``CE_k`` the mean cross-entropy on shard ``k``; upper
level ``g`` = mean cross-entropy on a validation set. The per-shard loss, gradient
and Hessian-vector product are pure functions, so a federated client can compute
its share with exactly the code the centralised problem uses: the problem reaches its
training data only through :class:`TrainingShards`, held here (:class:`LocalShards`)
or asked of clients (in federated form, each call one communication round).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)

from fedhyper.bilevel.problem import LowerSolution
from fedhyper.bilevel.solvers import (
    LOWER_SOLVER_KINDS,
    solve_by_local_rounds,
    solve_strongly_convex,
)
from fedhyper.errors import ConfigError


@dataclass(frozen=True)
class LabelledData:
    """Features and labels of one shard or split.

    Attributes
    ----------
    features : torch.Tensor
        ``float64``, ``n × d``.
    labels : torch.Tensor
        ``int64`` class indices, length ``n``.

    """

    features: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def shard_loss(weights: torch.Tensor, data: LabelledData) -> float:
    """Mean cross-entropy of ``softmax(features @ weights)`` on ``data``."""
    return float(F.cross_entropy(data.features @ weights, data.labels))


def shard_gradient(weights: torch.Tensor, data: LabelledData) -> torch.Tensor:
    """Gradient of :func:`shard_loss` in ``weights``: ``Aᵀ (softmax(A W) − Y) / n``."""
    residual = torch.softmax(data.features @ weights, dim=1)
    residual[torch.arange(len(data)), data.labels] -= 1.0
    return data.features.T @ residual / len(data)


def shard_hessian_vector(
    weights: torch.Tensor, data: LabelledData, vector: torch.Tensor
) -> torch.Tensor:
    """Hessian of :func:`shard_loss` in ``weights`` times ``vector`` (``d × C``).

    Per row, the softmax Jacobian ``diag(s) − s sᵀ`` applied to ``u = a V`` gives
    ``s ⊙ u − s ⟨s, u⟩``; the labels do not enter.
    """
    probabilities = torch.softmax(data.features @ weights, dim=1)
    directional = data.features @ vector
    mixed = probabilities * (
        directional - torch.sum(probabilities * directional, dim=1, keepdim=True)
    )
    return data.features.T @ mixed / len(data)


def accuracy(weights: torch.Tensor, data: LabelledData) -> float:
    """Fraction of rows of ``data`` whose highest logit is the label."""
    predictions = torch.argmax(data.features @ weights, dim=1)
    return float(torch.mean((predictions == data.labels).to(torch.float64)))


def loss_smoothness(features: torch.Tensor) -> float:
    """Return ``½ λ_max(AᵀA / n)``, a Lipschitz constant of the mean cross-entropy's gradient.

    The softmax Jacobian ``diag(s) − s sᵀ`` is at most ``½ I`` (Böhning, 1992), so the
    Hessian is at most ``½ (AᵀA / n) ⊗ I``.
    """
    second_moment = features.T @ features / features.shape[0]
    return 0.5 * float(torch.linalg.eigvalsh(second_moment)[-1])


def local_descent(
    x: torch.Tensor, theta: torch.Tensor, data: LabelledData, steps: int, step_size: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Take ``steps`` gradient steps on one shard's share of the lower level from ``x``.

    The shard's objective is ``CE_k(y) + ½ Σ e^θ ⊙ y²``, whose ``p_k``-weighted sum
    over shards is ``h``, so one step of every shard, averaged, is one gradient step
    on ``h``.

    Returns
    -------
    tuple of (torch.Tensor, torch.Tensor)
        ``∇CE_k(x)`` (the first step's data gradient, which certifies ``x``) and the
        iterate after the steps.

    """
    regulariser = torch.exp(theta)
    first = shard_gradient(x, data)
    point = x - step_size * (first + regulariser * x)
    for _ in range(steps - 1):
        point = point - step_size * (shard_gradient(point, data) + regulariser * point)
    return first, point


class TrainingShards(Protocol):
    """The lower level's training data as the problem reaches it: per shard terms.

    Shards are the non-empty ones, in a fixed order; each method returns one entry per
    shard in that order. In federated form each method call is one communication round.
    """

    @property
    def weights(self) -> list[float]:
        """``p_k = n_k / n``."""
        ...

    @property
    def data_smoothness(self) -> float:
        """``Σ_k p_k ½ λ_max(A_kᵀA_k / n_k)``, a Lipschitz constant of ``Σ_k p_k ∇CE_k``."""
        ...

    @property
    def classes(self) -> int:
        """One more than the largest label of any shard."""
        ...

    def losses_and_gradients(self, x: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
        """``(CE_k(x), ∇CE_k(x))`` of every shard."""
        ...

    def hessian_vectors(self, x: torch.Tensor, vector: torch.Tensor) -> list[torch.Tensor]:
        """``∇²CE_k(x) · vector`` of every shard."""
        ...

    def local_descents(
        self, x: torch.Tensor, theta: torch.Tensor, steps: int, step_size: float
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:func:`local_descent` on every shard."""
        ...


class LocalShards:
    """Shards held in this process (a :class:`TrainingShards`); empty ones are dropped.

    Parameters
    ----------
    shards : sequence of LabelledData
        The clients' training data.

    """

    def __init__(self, shards: Sequence[LabelledData]) -> None:
        self.shards = [shard for shard in shards if len(shard)]
        if not self.shards:
            raise ValueError("the problem needs training rows")
        total = sum(len(shard) for shard in self.shards)
        self._weights = [len(shard) / total for shard in self.shards]
        self._data_smoothness = sum(
            weight * loss_smoothness(shard.features)
            for weight, shard in zip(self._weights, self.shards, strict=True)
        )

    @property
    def weights(self) -> list[float]:
        """``p_k = n_k / n``."""
        return self._weights

    @property
    def data_smoothness(self) -> float:
        """``Σ_k p_k ½ λ_max(A_kᵀA_k / n_k)``."""
        return self._data_smoothness

    @property
    def classes(self) -> int:
        """One more than the largest label of any shard."""
        return max(int(shard.labels.max()) for shard in self.shards) + 1

    def losses_and_gradients(self, x: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
        """``(CE_k(x), ∇CE_k(x))`` of every shard."""
        return [(shard_loss(x, shard), shard_gradient(x, shard)) for shard in self.shards]

    def hessian_vectors(self, x: torch.Tensor, vector: torch.Tensor) -> list[torch.Tensor]:
        """``∇²CE_k(x) · vector`` of every shard."""
        return [shard_hessian_vector(x, shard, vector) for shard in self.shards]

    def local_descents(
        self, x: torch.Tensor, theta: torch.Tensor, steps: int, step_size: float
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:func:`local_descent` on every shard."""
        return [local_descent(x, theta, shard, steps, step_size) for shard in self.shards]


PROBLEM_SOLVER_KINDS = (*LOWER_SOLVER_KINDS, "fedavg")
"""Lower-level methods of :class:`LogisticL2Problem`."""


class LogisticL2Problem:
    """The bilevel problem over training shards (a :class:`BilevelProblem`).

    Parameters
    ----------
    shards : sequence of LabelledData, or TrainingShards
        The clients' training data, held here (empty shards are dropped: their weight
        is 0) or reached through a :class:`TrainingShards` (e.g. a federation).
    validation : LabelledData
        The upper level's data (never the test set).
    solver : {"gradient", "accelerated", "fedavg"}
        Lower-level method, step ``1 / L(θ)``. ``gradient`` and ``accelerated``: see
        :func:`~fedhyper.bilevel.solvers.solve_strongly_convex`, one gradient of ``h``
        (all shards) per iteration. ``fedavg``: every shard takes ``local_steps``
        steps of :func:`local_descent` from the current point and the point becomes the
        weighted average; the same call's gradients at the point certify it
        (:func:`~fedhyper.bilevel.solvers.solve_by_local_rounds`).
    max_lower_evaluations : int
        Cap on gradient evaluations (rounds) per lower-level solve.
    local_steps : int
        Steps per shard and round of the ``fedavg`` solver.

    Notes
    -----
    ``p_k = n_k / n``, so ``Σ_k p_k CE_k`` is the mean cross-entropy over all shards.
    ``μ(θ) = min e^θ`` and ``L(θ) = Σ_k p_k ½ λ_max(A_kᵀA_k / n_k) + max e^θ``.
    With heterogeneous shards, ``fedavg`` with more than one local step converges to
    a point near, not at, ``x̂(θ)`` (client drift), so a small enough ``ε`` is never
    certified and the solve ends at the evaluation cap, uncertified.

    """

    def __init__(
        self,
        shards: Sequence[LabelledData] | TrainingShards,
        validation: LabelledData,
        *,
        solver: str = "gradient",
        max_lower_evaluations: int = 10_000,
        local_steps: int = 1,
    ) -> None:
        if solver not in PROBLEM_SOLVER_KINDS:
            raise ConfigError("maid.lower_solver", solver, ", ".join(PROBLEM_SOLVER_KINDS))
        if max_lower_evaluations < 1:
            raise ConfigError("maid.max_lower_evaluations", max_lower_evaluations, ">= 1")
        if local_steps < 1:
            raise ConfigError("maid.local_steps", local_steps, ">= 1")
        if not len(validation):
            raise ValueError("the problem needs validation rows")
        self.training = LocalShards(shards) if isinstance(shards, Sequence) else shards
        self.validation = validation
        self.solver = solver
        self.max_lower_evaluations = max_lower_evaluations
        self.local_steps = local_steps
        self._upper_smoothness = loss_smoothness(validation.features)

    @property
    def upper_smoothness(self) -> float:
        """``L_g`` of the validation cross-entropy."""
        return self._upper_smoothness

    def weight_shape(self) -> tuple[int, int]:
        """Shape ``(d, C)`` of ``x`` and of ``θ``."""
        classes = max(self.training.classes, int(self.validation.labels.max()) + 1)
        return int(self.validation.features.shape[1]), classes

    def strong_convexity(self, theta: torch.Tensor) -> float:
        """``μ(θ) = min e^θ``."""
        return float(torch.exp(theta.min()))

    def lower_smoothness(self, theta: torch.Tensor) -> float:
        """``L(θ)``, the step's inverse."""
        return self.training.data_smoothness + float(torch.exp(theta.max()))

    def training_loss(self, x: torch.Tensor) -> float:
        """``Σ_k p_k CE_k(x)``."""
        terms = self.training.losses_and_gradients(x)
        return sum(
            weight * loss for weight, (loss, _) in zip(self.training.weights, terms, strict=True)
        )

    def lower_gradient(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """``∇_x h(x, θ) = Σ_k p_k ∇CE_k(x) + e^θ ⊙ x``."""
        return self._regularised(
            x, theta, [gradient for _, gradient in self.training.losses_and_gradients(x)]
        )

    def solve_lower(
        self, theta: torch.Tensor, start: torch.Tensor, epsilon: float
    ) -> LowerSolution:
        """Solve the lower level to certified accuracy ``ε`` from ``start``."""
        mu, smoothness = self.strong_convexity(theta), self.lower_smoothness(theta)
        if self.solver == "fedavg":
            return solve_by_local_rounds(
                lambda x: self._local_round(x, theta, 1 / smoothness),
                start,
                mu=mu,
                epsilon=epsilon,
                max_rounds=self.max_lower_evaluations,
            )
        return solve_strongly_convex(
            lambda x: self.lower_gradient(x, theta),
            start,
            mu=mu,
            smoothness=smoothness,
            epsilon=epsilon,
            max_evaluations=self.max_lower_evaluations,
            kind=self.solver,
        )

    def _local_round(
        self, x: torch.Tensor, theta: torch.Tensor, step_size: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``∇_x h(x, θ)`` and the weighted average of the shards' local descents."""
        descents = self.training.local_descents(x, theta, self.local_steps, step_size)
        average = torch.zeros_like(x)
        for weight, (_, point) in zip(self.training.weights, descents, strict=True):
            average = average + weight * point
        return self._regularised(x, theta, [gradient for gradient, _ in descents]), average

    def _regularised(
        self, x: torch.Tensor, theta: torch.Tensor, gradients: list[torch.Tensor]
    ) -> torch.Tensor:
        """``Σ_k p_k gradients_k + e^θ ⊙ x``."""
        gradient = torch.exp(theta) * x
        for weight, shard_term in zip(self.training.weights, gradients, strict=True):
            gradient = gradient + weight * shard_term
        return gradient

    def upper_value(self, x: torch.Tensor) -> float:
        """Return the validation cross-entropy ``g(x)``."""
        return shard_loss(x, self.validation)

    def upper_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """``∇g(x)``."""
        return shard_gradient(x, self.validation)

    def hessian_vector(
        self, x: torch.Tensor, theta: torch.Tensor, vector: torch.Tensor
    ) -> torch.Tensor:
        """``(Σ_k p_k H_k(x) + diag(e^θ)) · vector``."""
        product = torch.exp(theta) * vector
        for weight, shard_term in zip(
            self.training.weights, self.training.hessian_vectors(x, vector), strict=True
        ):
            product = product + weight * shard_term
        return product

    def mixed_vector(
        self, x: torch.Tensor, theta: torch.Tensor, vector: torch.Tensor
    ) -> torch.Tensor:
        """``∂/∂θ ⟨∇_x h(x, θ), vector⟩ = e^θ ⊙ x ⊙ vector``."""
        return torch.exp(theta) * x * vector
