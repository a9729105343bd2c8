"""Multinomial logistic regression with one L2 weight per parameter, over shards.

Lower level ``h(x, θ) = Σ_k p_k CE_k(x) + ½ Σ e^θ ⊙ x²`` with ``x`` the ``d × C``
weight matrix (no bias) and ``CE_k`` the mean cross-entropy on shard ``k``; upper
level ``g`` = mean cross-entropy on a validation set. The per-shard loss, gradient
and Hessian-vector product are pure functions, so a federated client can compute
its share with exactly the code the centralised problem uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)

from fedhyper.bilevel.problem import LowerSolution
from fedhyper.bilevel.solvers import LOWER_SOLVER_KINDS, solve_strongly_convex
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


class LogisticL2Problem:
    """The centralised bilevel problem over client shards (a :class:`BilevelProblem`).

    Parameters
    ----------
    shards : sequence of LabelledData
        The clients' training data; empty shards are dropped (their weight is 0).
    validation : LabelledData
        The upper level's data (never the test set).
    solver : {"gradient", "accelerated"}
        Lower-level method, step ``1 / L(θ)``; see
        :func:`~fedhyper.bilevel.solvers.solve_strongly_convex`.
    max_lower_evaluations : int
        Cap on gradient evaluations per lower-level solve.

    Notes
    -----
    ``p_k = n_k / n``, so ``Σ_k p_k CE_k`` is the mean cross-entropy over all shards.
    ``μ(θ) = min e^θ`` and ``L(θ) = Σ_k p_k ½ λ_max(A_kᵀA_k / n_k) + max e^θ``.

    """

    def __init__(
        self,
        shards: Sequence[LabelledData],
        validation: LabelledData,
        *,
        solver: str = "gradient",
        max_lower_evaluations: int = 10_000,
    ) -> None:
        if solver not in LOWER_SOLVER_KINDS:
            raise ConfigError("maid.lower_solver", solver, ", ".join(LOWER_SOLVER_KINDS))
        if max_lower_evaluations < 1:
            raise ConfigError("maid.max_lower_evaluations", max_lower_evaluations, ">= 1")
        self.shards = [shard for shard in shards if len(shard)]
        if not self.shards or not len(validation):
            raise ValueError("the problem needs training rows and validation rows")
        total = sum(len(shard) for shard in self.shards)
        self.shard_weights = [len(shard) / total for shard in self.shards]
        self.validation = validation
        self.solver = solver
        self.max_lower_evaluations = max_lower_evaluations
        self.data_smoothness = sum(
            weight * loss_smoothness(shard.features)
            for weight, shard in zip(self.shard_weights, self.shards, strict=True)
        )
        self._upper_smoothness = loss_smoothness(validation.features)

    @property
    def upper_smoothness(self) -> float:
        """``L_g`` of the validation cross-entropy."""
        return self._upper_smoothness

    def weight_shape(self) -> tuple[int, int]:
        """Shape ``(d, C)`` of ``x`` and of ``θ``."""
        classes = int(max(int(shard.labels.max()) for shard in self.shards)) + 1
        classes = max(classes, int(self.validation.labels.max()) + 1)
        return int(self.validation.features.shape[1]), classes

    def strong_convexity(self, theta: torch.Tensor) -> float:
        """``μ(θ) = min e^θ``."""
        return float(torch.exp(theta.min()))

    def lower_smoothness(self, theta: torch.Tensor) -> float:
        """``L(θ)``, the step's inverse."""
        return self.data_smoothness + float(torch.exp(theta.max()))

    def training_loss(self, x: torch.Tensor) -> float:
        """``Σ_k p_k CE_k(x)``."""
        return sum(
            weight * shard_loss(x, shard)
            for weight, shard in zip(self.shard_weights, self.shards, strict=True)
        )

    def lower_gradient(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        """``∇_x h(x, θ) = Σ_k p_k ∇CE_k(x) + e^θ ⊙ x``."""
        gradient = torch.exp(theta) * x
        for weight, shard in zip(self.shard_weights, self.shards, strict=True):
            gradient = gradient + weight * shard_gradient(x, shard)
        return gradient

    def solve_lower(
        self, theta: torch.Tensor, start: torch.Tensor, epsilon: float
    ) -> LowerSolution:
        """Solve the lower level to certified accuracy ``ε`` from ``start``."""
        return solve_strongly_convex(
            lambda x: self.lower_gradient(x, theta),
            start,
            mu=self.strong_convexity(theta),
            smoothness=self.lower_smoothness(theta),
            epsilon=epsilon,
            max_evaluations=self.max_lower_evaluations,
            kind=self.solver,
        )

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
        for weight, shard in zip(self.shard_weights, self.shards, strict=True):
            product = product + weight * shard_hessian_vector(x, shard, vector)
        return product

    def mixed_vector(
        self, x: torch.Tensor, theta: torch.Tensor, vector: torch.Tensor
    ) -> torch.Tensor:
        """``∂/∂θ ⟨∇_x h(x, θ), vector⟩ = e^θ ⊙ x ⊙ vector``."""
        return torch.exp(theta) * x * vector
