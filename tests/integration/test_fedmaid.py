"""``python -m fedhyper.bilevel``: FedMAID on Flower's simulation engine, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedhyper.bilevel.__main__ import USAGE_ERROR, main
from fedhyper.bilevel.config import compose_fedmaid
from fedhyper.bilevel.logistic import LogisticL2Problem
from fedhyper.bilevel.maid import MAID
from strategies.fedmaid import load_task

TINY = [
    "task.train_examples=150",
    "task.validation_examples=100",
    "task.test_examples=100",
    "task.num_clients=2",
    "max_steps=1",
    # Loose accuracies and a short line search: a step of a few dozen rounds, each of
    # which costs the simulation engine's messaging.
    "maid.epsilon0=0.05",
    "maid.delta0=0.05",
    "maid.max_trials=2",
    "maid.max_recomputes=1",
]


def test_a_simulated_run_takes_the_centralised_step(tmp_path: Path) -> None:
    main([*TINY, f"output_dir={tmp_path}"])
    (row,) = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    config = compose_fedmaid(TINY)
    task = load_task(config)
    problem = LogisticL2Problem(task.shards, task.validation, solver="accelerated")
    shape = problem.weight_shape()
    theta = torch.full(shape, config.theta0, dtype=torch.float64)
    record = MAID(problem, theta, torch.zeros(shape, dtype=torch.float64), config.maid).step()
    assert row["rounds"] == record.rounds > 0
    assert row["upper_value"] == pytest.approx(record.upper_value, rel=1e-12)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["total_rounds"] == record.rounds


@pytest.mark.parametrize(
    "argv",
    [["task.num_clients=zero"], ["lower.solver=sgd"], ["resume=/nonexistent/run"]],
)
def test_bad_input_ends_in_one_line_before_any_client_starts(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == USAGE_ERROR
    error = capsys.readouterr().err
    assert error.startswith("fedhyper.bilevel: invalid value for ") and error.count("\n") == 1
