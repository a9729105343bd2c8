"""MAID against fixed-accuracy schedules and hand-set L2 weights, centralised.

``python -m benchmarks.maid`` learns one L2 weight per entry (1,440) of a multinomial
logistic regression on 12x12 Fashion-MNIST (:mod:`fedhyper.bilevel.fashion12`) and
compares, against the cost in lower-level gradient evaluations plus CG Hessian-vector
products (each one communication round in federated form; validation losses are the
server's and cost none):

maid
    MAID, the paper's defaults (``ε₀ = δ₀ = 0.1``, ``β₀ = 0.1``, ...), ``θ₀ = −3``.
geometric, quadratic
    The same steps and line search with HOAG's accuracy schedules
    ``ε_k = δ_k = 0.1 · 0.9^k`` and ``0.1 / (k + 1)²``.
grid
    One shared L2 weight ``λ`` for every entry, solved to ``ε = 1e-3`` for each
    ``λ`` of a grid (largest first, each warm-started from the last); the point kept
    is the lowest validation loss so far.
unregularised
    Gradient descent on the training loss alone until ``‖∇‖ ≤ 1e-4`` (or a cap).

All runs use the accelerated lower-level solver (Nesterov's method, as the paper's
FISTA) and stop at the same round budget. The federated problem
(``python -m fedhyper.bilevel``) takes exactly these iterates, one communication
round per gradient or product, so the rounds here are FedMAID's. Results go to
``benchmarks/results/maid_centralised.json`` with the machine, date and command, with
a table (``.md``) and a plot (``.png``) beside it.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from benchmarks.provenance import command, write_result
from fedhyper.bilevel.fashion12 import BilevelTask, load_fashion12
from fedhyper.bilevel.logistic import LogisticL2Problem, accuracy
from fedhyper.bilevel.maid import MAID, MAIDConfig
from fedhyper.bilevel.solvers import solve_strongly_convex

RESULT = Path(__file__).parent / "results" / "maid_centralised.json"
THETA0 = -3.0
SCHEDULES = ("adaptive", "geometric", "quadratic")
LABELS = {"adaptive": "maid", "geometric": "geometric", "quadratic": "quadratic"}
GRID = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
GRID_ACCURACY = 1e-3
UNREGULARISED_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Point:
    """One point of a cost curve."""

    rounds: int
    upper_value: float
    test_accuracy: float


def run_schedule(
    problem: LogisticL2Problem, task: BilevelTask, schedule: str, max_rounds: int, max_steps: int
) -> dict[str, Any]:
    """Run MAID (``adaptive``) or a fixed schedule up to the round budget."""
    shape = problem.weight_shape()
    theta = torch.full(shape, THETA0, dtype=torch.float64)
    maid = MAID(
        problem, theta, torch.zeros(shape, dtype=torch.float64), MAIDConfig(schedule=schedule)
    )
    start = time.perf_counter()
    points = [Point(0, problem.upper_value(maid.x), accuracy(maid.x, task.test))]
    rounds = 0
    while len(maid.records) < max_steps and rounds < max_rounds:
        record = maid.step()
        rounds += record.rounds
        points.append(Point(rounds, record.upper_value, accuracy(maid.x, task.test)))
    records = maid.records
    weights = torch.exp(maid.theta)
    return {
        "method": LABELS[schedule],
        "points": [point.__dict__ for point in points],
        "steps": len(records),
        "accepted_steps": sum(record.accepted for record in records),
        "rounds": rounds,
        "lower_gradients": sum(record.lower_gradients for record in records),
        "hessian_vector_products": sum(record.hessian_vector_products for record in records),
        "rounds_per_step": rounds / max(len(records), 1),
        "final_epsilon": records[-1].epsilon,
        "all_certified": all(record.all_certified for record in records),
        "l2_weight_quantiles": [
            float(q)
            for q in torch.quantile(
                weights.flatten(), torch.tensor([0, 0.5, 1.0], dtype=torch.float64)
            )
        ],
        "wall_s": time.perf_counter() - start,
    }


def run_grid(problem: LogisticL2Problem, task: BilevelTask) -> dict[str, Any]:
    """Solve for each shared weight of :data:`GRID`; keep the best validation loss."""
    shape = problem.weight_shape()
    x = torch.zeros(shape, dtype=torch.float64)
    start = time.perf_counter()
    rounds = 0
    cells = []
    points = []
    best: dict[str, Any] | None = None
    for weight in GRID:
        theta = torch.full(shape, math.log(weight), dtype=torch.float64)
        solution = problem.solve_lower(theta, x, GRID_ACCURACY)
        x = solution.x
        rounds += solution.gradient_evaluations
        cell = {
            "l2_weight": weight,
            "rounds": solution.gradient_evaluations,
            "certified": solution.certified,
            "upper_value": problem.upper_value(x),
            "test_accuracy": accuracy(x, task.test),
        }
        cells.append(cell)
        if best is None or cell["upper_value"] < best["upper_value"]:
            best = cell
        points.append(Point(rounds, best["upper_value"], best["test_accuracy"]))
    return {
        "method": "grid",
        "points": [point.__dict__ for point in points],
        "cells": cells,
        "best_l2_weight": best["l2_weight"] if best else None,
        "rounds": rounds,
        "wall_s": time.perf_counter() - start,
    }


def run_unregularised(
    problem: LogisticL2Problem, task: BilevelTask, max_rounds: int
) -> dict[str, Any]:
    """Gradient descent on the training loss alone (no strong convexity to certify)."""
    shape = problem.weight_shape()
    start = time.perf_counter()
    solution = solve_strongly_convex(
        lambda x: problem.lower_gradient(x, torch.full(shape, -math.inf, dtype=torch.float64)),
        torch.zeros(shape, dtype=torch.float64),
        mu=1.0,  # with μ = 1 the test is ‖∇‖ ≤ tolerance
        smoothness=problem.training.data_smoothness,
        epsilon=UNREGULARISED_TOLERANCE,
        max_evaluations=max_rounds,
        kind="gradient",
    )
    point = Point(
        solution.gradient_evaluations,
        problem.upper_value(solution.x),
        accuracy(solution.x, task.test),
    )
    return {
        "method": "unregularised",
        "points": [point.__dict__],
        "rounds": solution.gradient_evaluations,
        "converged": solution.certified,
        "wall_s": time.perf_counter() - start,
    }


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    """Draw validation loss and test accuracy against rounds for every method."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for result in results:
        rounds = [point["rounds"] for point in result["points"]]
        style = "o-" if result["method"] in ("grid", "unregularised") else "-"
        for axis, key in zip(axes, ("upper_value", "test_accuracy"), strict=True):
            axis.plot(
                rounds, [point[key] for point in result["points"]], style, label=result["method"]
            )
    axes[0].set_ylabel("validation cross-entropy (upper level)")
    axes[1].set_ylabel("test accuracy")
    for axis in axes:
        axis.set_xlabel("lower-level gradients + CG Hessian-vector products")
        axis.grid(alpha=0.3)
    axes[1].legend()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_table(results: list[dict[str, Any]], path: Path, command: str) -> None:
    """Write the final point of every method as a markdown table."""
    lines = [
        "# MAID against fixed schedules, a one-weight grid and no regularisation",
        "",
        f"`{command}`; rounds = lower-level gradients + CG Hessian-vector products.",
        "",
        "| method | rounds | outer steps (accepted) | rounds per step | validation CE "
        "| test accuracy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        final = result["points"][-1]
        steps = f"{result['steps']} ({result['accepted_steps']})" if "steps" in result else "-"
        per_step = f"{result['rounds_per_step']:.0f}" if "rounds_per_step" in result else "-"
        lines.append(
            f"| {result['method']} | {result['rounds']} | {steps} | {per_step} "
            f"| {final['upper_value']:.4f} | {final['test_accuracy']:.4f} |"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def summary_row(result: dict[str, Any]) -> str:
    """One line of the printed table: the method's final point."""
    final = result["points"][-1]
    return (
        f"{result['method']:<14} rounds {result['rounds']:>6}  validation CE "
        f"{final['upper_value']:.4f}  test accuracy {final['test_accuracy']:.4f}  "
        f"({result['wall_s']:.0f} s)"
    )


def main(argv: list[str] | None = None) -> None:
    """Run every method and write the result file and plot."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--train-examples", type=int, default=1000)
    parser.add_argument("--validation-examples", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-rounds", type=int, default=20_000)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args(argv)
    # The tensors are small: one thread avoids contention on a shared machine.
    torch.set_num_threads(1)
    task = load_fashion12(
        train_examples=args.train_examples,
        validation_examples=args.validation_examples,
        num_clients=args.clients,
        alpha=args.alpha,
        seed=args.seed,
    )
    problem = LogisticL2Problem(task.shards, task.validation, solver="accelerated")
    runs = [
        *(
            functools.partial(
                run_schedule, problem, task, schedule, args.max_rounds, args.max_steps
            )
            for schedule in SCHEDULES
        ),
        functools.partial(run_grid, problem, task),
        functools.partial(run_unregularised, problem, task, args.max_rounds),
    ]
    results = []
    for run in runs:
        results.append(run())
        print(summary_row(results[-1]), flush=True)
    setup = {
        "task": "multinomial logistic regression, Fashion-MNIST 12x12 (area), 144 features, "
        "no bias, 1440 L2 weights",
        "train_examples": args.train_examples,
        "validation_examples": args.validation_examples,
        "test_examples": len(task.test),
        "clients": args.clients,
        "dirichlet_alpha": args.alpha,
        "client_sizes": [len(shard) for shard in task.shards],
        "seed": args.seed,
        "theta0": THETA0,
        "max_rounds": args.max_rounds,
        "lower_solver": "accelerated",
        "grid": list(GRID),
        "grid_accuracy": GRID_ACCURACY,
        "unregularised_tolerance": UNREGULARISED_TOLERANCE,
        "maid_config": MAIDConfig().__dict__,
        "rounds": "lower-level gradient evaluations + CG Hessian-vector products",
    }
    write_result(args.output, {"setup": setup, "results": results})
    write_table(results, args.output.with_suffix(".md"), command())
    plot(
        results,
        args.output.with_suffix(".png"),
        f"MAID, centralised, {args.train_examples} "
        f"training rows over {args.clients} Dirichlet({args.alpha}) shards",
    )


if __name__ == "__main__":
    main()
