"""Lower-level solvers with a certified stopping test, and conjugate gradients.

For a ``μ``-strongly convex ``h``, ``‖x − x̂‖ ≤ ‖∇h(x)‖ / μ``, so stopping when
``‖∇h(x)‖ ≤ μ ε`` certifies accuracy ``ε`` without knowing ``x̂``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, get_args

import torch

from fedhyper.bilevel.problem import LowerSolution

LowerSolverKind = Literal["gradient", "accelerated"]
LOWER_SOLVER_KINDS: tuple[str, ...] = get_args(LowerSolverKind)

Operator = Callable[[torch.Tensor], torch.Tensor]


def solve_strongly_convex(
    gradient: Operator,
    start: torch.Tensor,
    *,
    mu: float,
    smoothness: float,
    epsilon: float,
    max_evaluations: int,
    kind: str = "gradient",
) -> LowerSolution:
    """Minimise a ``μ``-strongly convex, ``L``-smooth function to certified accuracy.

    Parameters
    ----------
    gradient : callable
        ``x ↦ ∇h(x)``.
    start : torch.Tensor
        Initial iterate (warm start).
    mu, smoothness : float
        ``μ`` and ``L``; the step is ``1 / L``.
    epsilon : float
        Target accuracy: stop once ``‖∇h(x)‖ / μ ≤ ε``.
    max_evaluations : int
        Cap on gradient evaluations; reaching it returns an uncertified iterate.
    kind : {"gradient", "accelerated"}
        ``gradient``: gradient descent. ``accelerated``: Nesterov's method with the
        constant momentum ``(√L − √μ) / (√L + √μ)`` of the strongly convex case; the
        stopping test is applied at the point whose gradient was evaluated, which is
        the point returned.

    Returns
    -------
    LowerSolution
        The iterate, the number of gradient evaluations (the certifying one included)
        and whether the test held.

    """
    if kind not in LOWER_SOLVER_KINDS:
        raise ValueError(f"unknown lower-level solver {kind!r}: {', '.join(LOWER_SOLVER_KINDS)}")
    momentum = 0.0
    if kind == "accelerated":
        momentum = (math.sqrt(smoothness) - math.sqrt(mu)) / (math.sqrt(smoothness) + math.sqrt(mu))
    point = start
    previous = start
    for evaluation in range(1, max_evaluations + 1):
        direction = gradient(point)
        if float(torch.linalg.vector_norm(direction)) <= mu * epsilon:
            return LowerSolution(point, evaluation, certified=True)
        if evaluation == max_evaluations:
            break
        current = point - direction / smoothness
        point = current + momentum * (current - previous)
        previous = current
    return LowerSolution(point, max_evaluations, certified=False)


def conjugate_gradient(
    operator: Operator, rhs: torch.Tensor, tolerance: float, max_iterations: int
) -> tuple[torch.Tensor, int]:
    """Solve ``A q = rhs`` for symmetric positive definite ``A`` until ``‖r‖ ≤ tolerance``.

    Parameters
    ----------
    operator : callable
        ``v ↦ A v`` (one Hessian-vector product per call).
    rhs : torch.Tensor
        Right-hand side, any shape; ``A`` acts on tensors of that shape.
    tolerance : float
        Absolute residual tolerance ``δ``.
    max_iterations : int
        Cap on products with ``A``.

    Returns
    -------
    tuple of (torch.Tensor, int)
        The solution, started from zero, and the number of products with ``A``.

    """
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    direction = residual.clone()
    residual_sq = float(torch.sum(residual * residual))
    iterations = 0
    while math.sqrt(residual_sq) > tolerance and iterations < max_iterations:
        product = operator(direction)
        iterations += 1
        step = residual_sq / float(torch.sum(direction * product))
        solution = solution + step * direction
        residual = residual - step * product
        new_residual_sq = float(torch.sum(residual * residual))
        direction = residual + (new_residual_sq / residual_sq) * direction
        residual_sq = new_residual_sq
    return solution, iterations


LocalRound = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``x ↦ (∇h(x), next point)``: one round of local training that also reports ``∇h(x)``."""


def solve_by_local_rounds(
    local_round: LocalRound,
    start: torch.Tensor,
    *,
    mu: float,
    epsilon: float,
    max_rounds: int,
) -> LowerSolution:
    """Run rounds of local training (FedAvg) until a round certifies its starting point.

    Each round's replies carry the gradient at the point the round started from, so
    certifying costs no round of its own: the round whose gradient passes the test
    ``‖∇h(x)‖ / μ ≤ ε`` ends the solve at its starting point (its local training is
    discarded).

    Parameters
    ----------
    local_round : callable
        ``x ↦ (∇h(x), next point)``.
    start : torch.Tensor
        Initial iterate (warm start).
    mu : float
        ``μ``, the strong convexity constant of ``h``.
    epsilon : float
        Target accuracy.
    max_rounds : int
        Cap on rounds; reaching it returns an uncertified iterate.

    Returns
    -------
    LowerSolution
        The iterate, the rounds taken (``gradient_evaluations``) and whether the test
        held.

    """
    point = start
    for round_number in range(1, max_rounds + 1):
        gradient, following = local_round(point)
        if float(torch.linalg.vector_norm(gradient)) <= mu * epsilon:
            return LowerSolution(point, round_number, certified=True)
        if round_number < max_rounds:
            point = following
    return LowerSolution(point, max_rounds, certified=False)
