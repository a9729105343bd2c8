"""MAID's outer loop: adaptively inexact hypergradient descent with backtracking.

One outer step at accuracies ``ε`` (lower level) and ``δ`` (CG residual):

1. ``x̃`` ← lower-level solve to ``ε``, warm-started from the last iterate;
   ``q`` ← CG on ``H(x̃) q = ∇g(x̃)`` to residual ``δ``; ``z = −(∂²h/∂θ∂x) q``.
2. Backtracking from step ``β``: try ``α = β ρ^i`` (``i < max_trials``),
   ``θ⁺ = θ − α z``, ``x⁺`` ← solve to ``ε`` from ``x̃``, accept when the inexact
   Armijo test :func:`inexact_armijo_holds` holds.
3. Success: ``β ← α · 10/9``, ``ε ← ν ε``, ``δ ← ν δ``. Failure: ``ε ← τ ε``,
   ``δ ← τ δ`` and back to 1 (at most ``max_recomputes`` attempts per step; if all
   fail ``θ`` stays and the reduced accuracies carry over).

A fixed-accuracy schedule (HOAG-style, e.g. ``ε_k = ε₀ 0.9^k``) runs the same steps
and line search with one attempt per step and accuracies set by the step count alone.

Every step returns a :class:`StepRecord` with its cost: gradient evaluations of ``h``
and Hessian-vector products, each of which is one communication round in federated
form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar, get_args

import torch

from fedhyper.bilevel.problem import BilevelProblem
from fedhyper.bilevel.solvers import conjugate_gradient
from fedhyper.errors import ConfigError

AccuracySchedule = Literal["adaptive", "geometric", "quadratic", "cubic"]
ACCURACY_SCHEDULES: tuple[str, ...] = get_args(AccuracySchedule)

Trial = TypeVar("Trial")


@dataclass(frozen=True)
class MAIDConfig:
    """MAID's constants; defaults are the paper's.

    Attributes
    ----------
    epsilon0, delta0 : float
        Initial lower-level accuracy ``ε₀`` and CG residual ``δ₀``.
    step0 : float
        Initial step ``β₀``.
    rho : float
        Backtracking factor ``ρ``.
    max_trials : int
        Step sizes tried per line search.
    max_recomputes : int
        Hypergradients computed per outer step (adaptive schedule only).
    nu : float
        Accuracy relaxation ``ν ≥ 1`` after a successful step.
    tau : float
        Accuracy tightening ``τ < 1`` after a failed line search.
    step_growth : float
        Factor on the accepted step that gives the next step's first trial.
    armijo_c : float
        Sufficient-decrease constant ``c``.
    schedule : {"adaptive", "geometric", "quadratic", "cubic"}
        ``adaptive`` is MAID. The others fix ``(ε_k, δ_k)`` in advance as
        ``(ε₀, δ₀)`` times ``r^k`` (``geometric``, ``r = schedule_ratio``),
        ``(k + 1)^-2`` (``quadratic``) or ``(k + 1)^-3`` (``cubic``).
    schedule_ratio : float
        ``r`` of the geometric schedule.
    max_cg_iterations : int
        Cap on Hessian-vector products per CG solve.
    min_accuracy : float
        Floor on ``ε`` and ``δ``: below about ``1e-12`` relative, float64 cannot
        certify a solve, and an unfloored MAID would halve them for ever once the
        line search fails at a stationary point (HOAG's code floors at the same value).

    """

    epsilon0: float = 0.1
    delta0: float = 0.1
    step0: float = 0.1
    rho: float = 0.9
    max_trials: int = 10
    max_recomputes: int = 3
    nu: float = 1.05
    tau: float = 0.5
    step_growth: float = 10 / 9
    armijo_c: float = 1e-8
    schedule: str = "adaptive"
    schedule_ratio: float = 0.9
    max_cg_iterations: int = 1000
    min_accuracy: float = 1e-12

    def __post_init__(self) -> None:
        positive = {
            "epsilon0": self.epsilon0,
            "delta0": self.delta0,
            "step0": self.step0,
            "armijo_c": self.armijo_c,
            "min_accuracy": self.min_accuracy,
        }
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"maid.{key}", value, "a number > 0")
        below_one = {"rho": self.rho, "tau": self.tau, "schedule_ratio": self.schedule_ratio}
        for key, value in below_one.items():
            if not 0 < value < 1:
                raise ConfigError(f"maid.{key}", value, "a number in (0, 1)")
        for key, value in {"nu": self.nu, "step_growth": self.step_growth}.items():
            if not value >= 1:
                raise ConfigError(f"maid.{key}", value, "a number >= 1")
        counts = {
            "max_trials": self.max_trials,
            "max_recomputes": self.max_recomputes,
            "max_cg_iterations": self.max_cg_iterations,
        }
        for key, count in counts.items():
            if count < 1:
                raise ConfigError(f"maid.{key}", count, "an integer >= 1")
        if self.schedule not in ACCURACY_SCHEDULES:
            raise ConfigError("maid.schedule", self.schedule, ", ".join(ACCURACY_SCHEDULES))

    def scheduled_accuracies(self, iteration: int) -> tuple[float, float]:
        """Return ``(ε_k, δ_k)`` of a fixed schedule at outer step ``iteration``."""
        if self.schedule == "geometric":
            factor = self.schedule_ratio**iteration
        elif self.schedule == "quadratic":
            factor = (iteration + 1) ** -2.0
        elif self.schedule == "cubic":
            factor = (iteration + 1) ** -3.0
        else:
            raise ValueError("the adaptive schedule has no fixed accuracies")
        return (
            max(self.epsilon0 * factor, self.min_accuracy),
            max(self.delta0 * factor, self.min_accuracy),
        )


@dataclass(frozen=True)
class StepRecord:
    """What one outer step did and cost.

    Attributes
    ----------
    iteration : int
        Outer step index ``k``, from 0.
    accepted : bool
        Whether a step was taken (``θ`` changed).
    trials : int
        Step sizes tried, over all attempts.
    recomputes : int
        Failed line searches (each followed by tighter accuracies).
    epsilon, delta : float
        Accuracies of the last attempt.
    step_size : float
        The accepted step ``α`` (0 when none was accepted).
    upper_value : float
        ``g`` at the iterate the step ends on.
    hypergradient_norm : float
        ``‖z‖`` of the last attempt.
    lower_gradients : int
        Gradient evaluations of ``h`` in this step (solves and line search).
    hessian_vector_products : int
        CG products with ``H`` in this step.
    all_certified : bool
        Whether every lower-level solve met its stopping test.

    """

    iteration: int
    accepted: bool
    trials: int
    recomputes: int
    epsilon: float
    delta: float
    step_size: float
    upper_value: float
    hypergradient_norm: float
    lower_gradients: int
    hessian_vector_products: int
    all_certified: bool

    @property
    def rounds(self) -> int:
        """Communication rounds in federated form: one per gradient or product."""
        return self.lower_gradients + self.hessian_vector_products


def inexact_armijo_holds(
    *,
    new_value: float,
    new_gradient_norm: float,
    old_value: float,
    old_gradient_norm: float,
    epsilon: float,
    upper_smoothness: float,
    step: float,
    direction_norm_sq: float,
    c: float,
) -> bool:
    """MAID's sufficient-decrease test on values known only to accuracy ``ε``.

    ``g(x̂(θ))`` lies within ``‖∇g(x̃)‖ ε + L_g ε² / 2`` of ``g(x̃)`` when
    ``‖x̃ − x̂(θ)‖ ≤ ε``. The test compares the upper bound at the trial point with
    the lower bound at the current one::

        g(x⁺) + ‖∇g(x⁺)‖ε + L_g ε²/2 − [g(x̃) − ‖∇g(x̃)‖ε − L_g ε²/2] ≤ −c α ‖z‖²

    Parameters
    ----------
    new_value, new_gradient_norm : float
        ``g(x⁺)`` and ``‖∇g(x⁺)‖`` at the trial point.
    old_value, old_gradient_norm : float
        ``g(x̃)`` and ``‖∇g(x̃)‖`` at the current point.
    epsilon : float
        Lower-level accuracy of both solves.
    upper_smoothness : float
        ``L_g``.
    step : float
        Trial step ``α``.
    direction_norm_sq : float
        ``‖z‖²``.
    c : float
        Sufficient-decrease constant.

    Returns
    -------
    bool
        Whether the trial step is accepted.

    """
    slack = upper_smoothness * epsilon**2 / 2
    new_upper = new_value + new_gradient_norm * epsilon + slack
    old_lower = old_value - old_gradient_norm * epsilon - slack
    return new_upper - old_lower <= -c * step * direction_norm_sq


def backtrack(
    attempt: Callable[[float], Trial | None], initial_step: float, rho: float, max_trials: int
) -> tuple[float, Trial | None, int]:
    """Try ``initial_step · ρ^i`` for ``i = 0, 1, …`` until ``attempt`` accepts one.

    Parameters
    ----------
    attempt : callable
        ``α ↦`` the trial's outcome if it is accepted, else ``None``.
    initial_step : float
        First step tried.
    rho : float
        Factor between consecutive steps.
    max_trials : int
        Steps tried at most.

    Returns
    -------
    tuple of (float, object or None, int)
        The last step tried, the accepted outcome (``None`` if none was) and the
        number of steps tried.

    """
    step = initial_step
    for trial in range(max_trials):
        step = initial_step * rho**trial
        outcome = attempt(step)
        if outcome is not None:
            return step, outcome, trial + 1
    return step, None, max_trials


@dataclass(frozen=True)
class _Candidate:
    """An accepted trial: the new hyperparameters, lower iterate and its ``g``."""

    theta: torch.Tensor
    x: torch.Tensor
    upper_value: float


@dataclass
class _StepCost:
    """Running cost of one outer step."""

    lower_gradients: int = 0
    hessian_vector_products: int = 0
    trials: int = 0
    all_certified: bool = True


class MAID:
    """MAID (or a fixed-accuracy schedule) over a :class:`BilevelProblem`.

    Parameters
    ----------
    problem : BilevelProblem
        The bilevel problem.
    theta : torch.Tensor
        Initial hyperparameters ``θ₀``.
    x : torch.Tensor
        Initial lower-level iterate (the first solve's warm start).
    config : MAIDConfig, optional
        Constants and schedule; the paper's defaults.

    Notes
    -----
    All the state that the next step depends on is in :meth:`state_dict`, so a run
    restored with :meth:`load_state_dict` continues exactly as an uninterrupted one.

    """

    def __init__(
        self,
        problem: BilevelProblem,
        theta: torch.Tensor,
        x: torch.Tensor,
        config: MAIDConfig | None = None,
    ) -> None:
        self.problem = problem
        self.config = config or MAIDConfig()
        self.theta = theta.clone()
        self.x = x.clone()
        self.epsilon = self.config.epsilon0
        self.delta = self.config.delta0
        self.step_size = self.config.step0
        self.records: list[StepRecord] = []

    @property
    def adaptive(self) -> bool:
        """Whether accuracies are chosen on the fly (MAID) rather than scheduled."""
        return self.config.schedule == "adaptive"

    @property
    def total_rounds(self) -> int:
        """Gradient evaluations plus Hessian-vector products over all steps so far."""
        return sum(record.rounds for record in self.records)

    def run(self, max_steps: int, max_rounds: int | None = None) -> list[StepRecord]:
        """Take outer steps until ``max_steps`` in all or ``max_rounds`` are spent.

        Parameters
        ----------
        max_steps : int
            Total outer steps (counting those taken before a resume).
        max_rounds : int, optional
            Stop once :attr:`total_rounds` reaches this; the step that crosses it
            completes.

        Returns
        -------
        list of StepRecord
            All records so far.

        """
        while len(self.records) < max_steps and (
            max_rounds is None or self.total_rounds < max_rounds
        ):
            self.step()
        return self.records

    def step(self) -> StepRecord:
        """Take one outer step; see the module docstring."""
        config = self.config
        iteration = len(self.records)
        if not self.adaptive:
            self.epsilon, self.delta = config.scheduled_accuracies(iteration)
        cost = _StepCost()
        candidate: _Candidate | None = None
        step = 0.0
        recomputes = 0
        for _ in range(config.max_recomputes if self.adaptive else 1):
            self.x = self._solve(self.theta, self.x, cost)
            direction = self._hypergradient(self.x, cost)
            step, candidate = self._line_search(direction, cost)
            if candidate is not None:
                break
            if self.adaptive:
                recomputes += 1
                self.epsilon = max(self.epsilon * config.tau, config.min_accuracy)
                self.delta = max(self.delta * config.tau, config.min_accuracy)
        record_epsilon, record_delta = self.epsilon, self.delta
        if candidate is None:
            upper_value = self.problem.upper_value(self.x)
        else:
            self.theta, self.x, upper_value = candidate.theta, candidate.x, candidate.upper_value
            self.step_size = step * config.step_growth
            if self.adaptive:
                self.epsilon *= config.nu
                self.delta *= config.nu
        record = StepRecord(
            iteration=iteration,
            accepted=candidate is not None,
            trials=cost.trials,
            recomputes=recomputes,
            epsilon=record_epsilon,
            delta=record_delta,
            step_size=step if candidate is not None else 0.0,
            upper_value=upper_value,
            hypergradient_norm=float(torch.linalg.vector_norm(direction)),
            lower_gradients=cost.lower_gradients,
            hessian_vector_products=cost.hessian_vector_products,
            all_certified=cost.all_certified,
        )
        self.records.append(record)
        return record

    def _solve(self, theta: torch.Tensor, start: torch.Tensor, cost: _StepCost) -> torch.Tensor:
        """Solve the lower level to the current ``ε``, adding to ``cost``."""
        solution = self.problem.solve_lower(theta, start, self.epsilon)
        cost.lower_gradients += solution.gradient_evaluations
        cost.all_certified = cost.all_certified and solution.certified
        return solution.x

    def hypergradient(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Return the inexact hypergradient ``z`` at ``(x, θ)`` and its CG products.

        ``q`` solves ``H(x, θ) q = ∇g(x)`` by CG to residual ``δ``;
        ``z = −(∂²h/∂θ∂x)(x, θ) q``.
        """
        theta = self.theta
        adjoint, products = conjugate_gradient(
            lambda vector: self.problem.hessian_vector(x, theta, vector),
            self.problem.upper_gradient(x),
            self.delta,
            self.config.max_cg_iterations,
        )
        return -self.problem.mixed_vector(x, theta, adjoint), products

    def _hypergradient(self, x: torch.Tensor, cost: _StepCost) -> torch.Tensor:
        direction, products = self.hypergradient(x)
        cost.hessian_vector_products += products
        return direction

    def _line_search(
        self, direction: torch.Tensor, cost: _StepCost
    ) -> tuple[float, _Candidate | None]:
        """Backtrack along ``−direction`` from ``(θ, x̃)`` = ``(self.theta, self.x)``."""
        problem = self.problem
        old_value = problem.upper_value(self.x)
        old_gradient_norm = float(torch.linalg.vector_norm(problem.upper_gradient(self.x)))
        direction_norm_sq = float(torch.sum(direction * direction))

        def attempt(step: float) -> _Candidate | None:
            theta = self.theta - step * direction
            x = self._solve(theta, self.x, cost)
            value = problem.upper_value(x)
            holds = inexact_armijo_holds(
                new_value=value,
                new_gradient_norm=float(torch.linalg.vector_norm(problem.upper_gradient(x))),
                old_value=old_value,
                old_gradient_norm=old_gradient_norm,
                epsilon=self.epsilon,
                upper_smoothness=problem.upper_smoothness,
                step=step,
                direction_norm_sq=direction_norm_sq,
                c=self.config.armijo_c,
            )
            return _Candidate(theta, x, value) if holds else None

        step, candidate, trials = backtrack(
            attempt, self.step_size, self.config.rho, self.config.max_trials
        )
        cost.trials += trials
        return step, candidate

    def state_dict(self) -> dict[str, Any]:
        """Return everything the next step depends on (tensors are copies)."""
        return {
            "schedule": self.config.schedule,
            "theta": self.theta.clone(),
            "x": self.x.clone(),
            "epsilon": self.epsilon,
            "delta": self.delta,
            "step_size": self.step_size,
            "records": [asdict(record) for record in self.records],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the schedule must match this run's config."""
        if state["schedule"] != self.config.schedule:
            raise ValueError(
                f"state is from the {state['schedule']!r} schedule, "
                f"this run uses {self.config.schedule!r}"
            )
        self.theta = state["theta"].clone()
        self.x = state["x"].clone()
        self.epsilon = float(state["epsilon"])
        self.delta = float(state["delta"])
        self.step_size = float(state["step_size"])
        self.records = [StepRecord(**record) for record in state["records"]]
