"""What MAID asks of a bilevel problem.

The problem is ``min_θ f(θ) = g(x̂(θ))`` with ``x̂(θ) = argmin_x h(x, θ)``, ``h``
``μ``-strongly convex in ``x`` and ``∇g`` ``L_g``-Lipschitz. By the implicit function
theorem ``∇f(θ) = −(∂²h/∂θ∂x) H⁻¹ ∇g(x̂)`` with ``H = ∇²_x h``; MAID evaluates it at an
inexact ``x̃`` with an inexact linear solve, so the problem supplies the pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class LowerSolution:
    """An inexact lower-level solution and what it cost.

    Attributes
    ----------
    x : torch.Tensor
        The iterate; ``‖x − x̂(θ)‖ ≤ ε`` when ``certified``.
    gradient_evaluations : int
        Gradients of ``h`` evaluated (in federated form: communication rounds).
    certified : bool
        Whether the stopping test ``‖∇_x h(x)‖ / μ ≤ ε`` held; ``False`` when the
        solver's evaluation cap stopped it first.

    """

    x: torch.Tensor
    gradient_evaluations: int
    certified: bool


class BilevelProblem(Protocol):
    """A bilevel problem as MAID sees it; ``x`` and ``θ`` are tensors of any shape."""

    @property
    def upper_smoothness(self) -> float:
        """``L_g``, a Lipschitz constant of ``∇g`` (used by the inexact Armijo test)."""
        ...

    def strong_convexity(self, theta: torch.Tensor) -> float:
        """``μ(θ)``, a strong convexity constant of ``h(·, θ)``."""
        ...

    def solve_lower(
        self, theta: torch.Tensor, start: torch.Tensor, epsilon: float
    ) -> LowerSolution:
        """Solve ``min_x h(x, θ)`` from ``start`` until ``‖x − x̂(θ)‖ ≤ ε`` is certified."""
        ...

    def upper_value(self, x: torch.Tensor) -> float:
        """``g(x)``."""
        ...

    def upper_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """``∇g(x)``, shaped like ``x``."""
        ...

    def hessian_vector(
        self, x: torch.Tensor, theta: torch.Tensor, vector: torch.Tensor
    ) -> torch.Tensor:
        """``∇²_x h(x, θ) · vector``, shaped like ``x``."""
        ...

    def mixed_vector(
        self, x: torch.Tensor, theta: torch.Tensor, vector: torch.Tensor
    ) -> torch.Tensor:
        """``(∂²h / ∂θ ∂x)(x, θ) · vector``, shaped like ``θ``.

        The hypergradient is ``−mixed_vector(x̃, θ, q)`` with ``H q = ∇g(x̃)``; for one
        L2 weight ``e^θ`` per entry it is ``e^θ ⊙ x ⊙ vector``.
        """
        ...
