"""MAID's outer loop, line search and solvers on problems with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from fedhyper.bilevel.maid import MAID, MAIDConfig, backtrack, inexact_armijo_holds
from fedhyper.bilevel.problem import LowerSolution
from fedhyper.bilevel.solvers import conjugate_gradient, solve_strongly_convex
from fedhyper.errors import ConfigError

DTYPE = torch.float64


class QuadraticProblem:
    """``h = ½ (x − y)ᵀ A (x − y) + ½ Σ e^θ x²``, ``g = ½ ‖x − t‖²``.

    ``x̂(θ) = (A + diag e^θ)⁻¹ A y``; with ``t = x̂(θ*)`` the minimum ``g = 0`` is at
    ``θ*``.
    """

    upper_smoothness = 1.0

    def __init__(self, a: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> None:
        self.a, self.y, self.target = a, y, target
        eigenvalues = torch.linalg.eigvalsh(a)
        self.lowest, self.highest = float(eigenvalues[0]), float(eigenvalues[-1])

    def strong_convexity(self, theta: torch.Tensor) -> float:
        return self.lowest + float(torch.exp(theta.min()))

    def solve_lower(
        self, theta: torch.Tensor, start: torch.Tensor, epsilon: float
    ) -> LowerSolution:
        return solve_strongly_convex(
            lambda x: self.a @ (x - self.y) + torch.exp(theta) * x,
            start,
            mu=self.strong_convexity(theta),
            smoothness=self.highest + float(torch.exp(theta.max())),
            epsilon=epsilon,
            max_evaluations=100_000,
        )

    def upper_value(self, x: torch.Tensor) -> float:
        return 0.5 * float(torch.sum((x - self.target) ** 2))

    def upper_gradient(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.target

    def hessian_vector(self, x: torch.Tensor, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.a @ v + torch.exp(theta) * v

    def mixed_vector(self, x: torch.Tensor, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.exp(theta) * x * v


class FlatProblem(QuadraticProblem):
    """``g ≡ 0``: no step can pass the inexact Armijo test (its slack is positive)."""

    def upper_value(self, x: torch.Tensor) -> float:
        return 0.0

    def upper_gradient(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


A = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.5, 0.3], [0.0, 0.3, 1.0]], dtype=DTYPE)
Y = torch.tensor([3.0, -2.0, 4.0], dtype=DTYPE)
THETA_STAR = torch.tensor([0.0, math.log(2.0), -0.5], dtype=DTYPE)


def quadratic_problem() -> QuadraticProblem:
    target = torch.linalg.solve(A + torch.diag(torch.exp(THETA_STAR)), A @ Y)
    return QuadraticProblem(A, Y, target)


def zeros() -> torch.Tensor:
    return torch.zeros(3, dtype=DTYPE)


def test_conjugate_gradient_matches_a_direct_solve() -> None:
    generator = torch.Generator().manual_seed(0)
    factor = torch.randn(6, 6, generator=generator, dtype=DTYPE)
    matrix = factor @ factor.T + 0.5 * torch.eye(6, dtype=DTYPE)
    rhs = torch.randn(6, generator=generator, dtype=DTYPE)
    products = 0

    def operator(vector: torch.Tensor) -> torch.Tensor:
        nonlocal products
        products += 1
        return matrix @ vector

    solution, iterations = conjugate_gradient(operator, rhs, 1e-10, 100)
    assert torch.allclose(solution, torch.linalg.solve(matrix, rhs), atol=1e-9)
    assert iterations == products
    # Exact arithmetic ends in n steps; allow a little for rounding.
    assert iterations <= 8
    assert float(torch.linalg.vector_norm(matrix @ solution - rhs)) <= 1e-10


def test_conjugate_gradient_stops_at_the_tolerance_and_zero_rhs_costs_nothing() -> None:
    solution, iterations = conjugate_gradient(
        lambda v: 2.0 * v, torch.zeros(4, dtype=DTYPE), 0.1, 9
    )
    assert iterations == 0 and torch.equal(solution, torch.zeros(4, dtype=DTYPE))
    # A = 2 I: one step solves exactly.
    solution, iterations = conjugate_gradient(
        lambda v: 2.0 * v, torch.ones(4, dtype=DTYPE), 1e-12, 9
    )
    assert iterations == 1 and torch.allclose(solution, torch.full((4,), 0.5, dtype=DTYPE))


@pytest.mark.parametrize("kind", ["gradient", "accelerated"])
@pytest.mark.parametrize("epsilon", [1e-1, 1e-4, 1e-8])
def test_lower_solver_certifies_its_accuracy(kind: str, epsilon: float) -> None:
    minimiser = torch.linalg.solve(A, A @ Y)
    solution = solve_strongly_convex(
        lambda x: A @ (x - Y),
        zeros(),
        mu=0.7,
        smoothness=3.0,
        epsilon=epsilon,
        max_evaluations=10_000,
        kind=kind,
    )
    assert solution.certified
    assert float(torch.linalg.vector_norm(solution.x - minimiser)) <= epsilon
    assert float(torch.linalg.vector_norm(A @ (solution.x - Y))) <= 0.7 * epsilon


def test_lower_solver_reports_an_uncertified_iterate_at_its_cap() -> None:
    solution = solve_strongly_convex(
        lambda x: A @ (x - Y), zeros(), mu=0.7, smoothness=3.0, epsilon=1e-8, max_evaluations=3
    )
    assert not solution.certified and solution.gradient_evaluations == 3


def test_inexact_armijo_on_hand_computed_values() -> None:
    # slack = L ε²/2 = 4 · 0.01 / 2 = 0.02; upper at x⁺ = 1 + 2 · 0.1 + 0.02 = 1.22;
    # lower at x̃ = 1.5 − 1 · 0.1 − 0.02 = 1.38; difference −0.16.
    common = {
        "new_value": 1.0,
        "new_gradient_norm": 2.0,
        "old_value": 1.5,
        "old_gradient_norm": 1.0,
        "epsilon": 0.1,
        "upper_smoothness": 4.0,
        "step": 0.1,
        "c": 1.0,
    }
    assert inexact_armijo_holds(**common, direction_norm_sq=1.5)  # −0.16 ≤ −0.15
    assert not inexact_armijo_holds(**common, direction_norm_sq=1.7)  # −0.16 > −0.17


def test_backtracking_returns_the_first_step_that_passes() -> None:
    tried: list[float] = []

    def attempt(step: float) -> str | None:
        tried.append(step)
        return "ok" if step <= 0.5 else None

    # 0.9^6 = 0.531 > 0.5 ≥ 0.9^7 = 0.478: the eighth trial.
    step, outcome, trials = backtrack(attempt, 1.0, 0.9, 10)
    assert (outcome, trials) == ("ok", 8) and step == pytest.approx(0.9**7)
    assert tried == pytest.approx([0.9**i for i in range(8)])
    step, outcome, trials = backtrack(attempt, 10.0, 0.9, 10)
    assert outcome is None and trials == 10 and step == pytest.approx(10 * 0.9**9)


def test_success_grows_the_step_and_relaxes_the_accuracies() -> None:
    maid = MAID(quadratic_problem(), zeros(), zeros(), MAIDConfig(step0=1.0))
    record = maid.step()
    # From θ = 0 the first trial α = 1 passes on this problem.
    assert record.accepted and record.trials == 1 and record.step_size == 1.0
    assert maid.step_size == pytest.approx(10 / 9)
    assert maid.epsilon == pytest.approx(0.105) and maid.delta == pytest.approx(0.105)
    assert record.rounds == record.lower_gradients + record.hessian_vector_products > 0


def test_failure_tightens_the_accuracies_and_keeps_theta() -> None:
    maid = MAID(FlatProblem(A, Y, Y), zeros(), zeros())
    record = maid.step()
    assert not record.accepted and record.recomputes == 3 and record.trials == 30
    assert maid.epsilon == pytest.approx(0.1 * 0.5**3) and maid.delta == pytest.approx(0.1 * 0.5**3)
    assert maid.step_size == 0.1 and torch.equal(maid.theta, zeros())


def test_fixed_schedule_sets_the_accuracies_by_step_count() -> None:
    maid = MAID(FlatProblem(A, Y, Y), zeros(), zeros(), MAIDConfig(schedule="geometric"))
    records = maid.run(3)
    assert [r.epsilon for r in records] == pytest.approx([0.1, 0.09, 0.081])
    assert [r.recomputes for r in records] == [0, 0, 0] and [r.trials for r in records] == [10] * 3
    assert MAIDConfig(schedule="cubic").scheduled_accuracies(1) == pytest.approx((0.0125, 0.0125))
    assert MAIDConfig(schedule="quadratic", min_accuracy=0.05).scheduled_accuracies(1) == (
        pytest.approx(0.05),
        pytest.approx(0.05),
    )


def test_maid_reaches_the_closed_form_optimum_of_a_quadratic() -> None:
    maid = MAID(quadratic_problem(), zeros(), zeros(), MAIDConfig(step0=1.0))
    records = maid.run(40)
    assert float(torch.linalg.vector_norm(maid.theta - THETA_STAR)) < 1e-5
    assert records[-1].upper_value < 1e-10
    assert all(record.all_certified for record in records)


def test_geometric_schedule_also_approaches_the_optimum() -> None:
    maid = MAID(quadratic_problem(), zeros(), zeros(), MAIDConfig(step0=1.0, schedule="geometric"))
    maid.run(60)
    assert float(torch.linalg.vector_norm(maid.theta - THETA_STAR)) < 1e-2


@pytest.mark.parametrize("schedule", ["adaptive", "geometric"])
def test_resumed_run_equals_an_uninterrupted_one(schedule: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = MAIDConfig(step0=1.0, schedule=schedule)
    uninterrupted = MAID(quadratic_problem(), zeros(), zeros(), config)
    uninterrupted.run(12)

    first = MAID(quadratic_problem(), zeros(), zeros(), config)
    first.run(6)
    torch.save(first.state_dict(), tmp_path / "maid.pt")
    resumed = MAID(quadratic_problem(), torch.ones(3, dtype=DTYPE), zeros(), config)
    resumed.load_state_dict(torch.load(tmp_path / "maid.pt", weights_only=True))
    resumed.run(12)

    assert resumed.records == uninterrupted.records
    assert torch.equal(resumed.theta, uninterrupted.theta)
    assert torch.equal(resumed.x, uninterrupted.x)
    assert resumed.state_dict()["step_size"] == uninterrupted.state_dict()["step_size"]


def test_state_from_another_schedule_is_refused() -> None:
    adaptive = MAID(quadratic_problem(), zeros(), zeros())
    fixed = MAID(quadratic_problem(), zeros(), zeros(), MAIDConfig(schedule="geometric"))
    with pytest.raises(ValueError, match="adaptive"):
        fixed.load_state_dict(adaptive.state_dict())


def test_run_stops_at_the_round_budget() -> None:
    maid = MAID(quadratic_problem(), zeros(), zeros(), MAIDConfig(step0=1.0))
    records = maid.run(1000, max_rounds=50)
    assert maid.total_rounds >= 50
    assert sum(record.rounds for record in records[:-1]) < 50


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rho", 1.5),
        ("tau", 0.0),
        ("nu", 0.9),
        ("epsilon0", -1.0),
        ("max_trials", 0),
        ("schedule", "linear"),
    ],
)
def test_bad_constants_name_their_key(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"maid.{field}"):
        MAIDConfig(**{field: value})  # type: ignore[arg-type]
