"""FedMAID over a federation: the same iterates as the centralised MAID, and resumable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fedhyper.bilevel.config import FedMAIDConfig, compose_fedmaid
from fedhyper.bilevel.maid import MAID
from strategies.fedmaid import load_task, run_fedmaid, start_maid
from tests.support.inprocess import InProcessGrid

SMALL = [
    "task.train_examples=240",
    "task.validation_examples=120",
    "task.test_examples=100",
    "task.num_clients=3",
    "max_steps=2",
    # With these, both steps are accepted at about 250 rounds in all.
    "maid.step0=30",
    "maid.epsilon0=0.005",
    "maid.delta0=0.005",
]


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(*overrides: str) -> FedMAIDConfig:
    return compose_fedmaid([*SMALL, *overrides])


def centralised(config: FedMAIDConfig) -> MAID:
    task = load_task(config)
    maid = start_maid(task.shards, task, config)
    maid.run(config.max_steps)
    return maid


def federated(config: FedMAIDConfig, run_dir: Path) -> tuple[list[dict], dict]:
    history = run_fedmaid(InProcessGrid(config.task.num_clients), config, run_dir)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["maid"]
    return history, state


@pytest.mark.parametrize(
    "lower",
    [
        ["lower.solver=accelerated"],
        # Two local steps drift from x̂(θ): the capped solves end uncertified, alike.
        ["lower.solver=fedavg", "lower.local_steps=2", "lower.max_rounds=10"],
    ],
    ids=["accelerated", "fedavg"],
)
def test_federated_run_takes_the_centralised_iterates(tmp_path: Path, lower: list[str]) -> None:
    config = small(*lower)
    history, state = federated(config, tmp_path)
    reference = centralised(config)
    assert [row["iteration"] for row in history] == [0, 1]
    assert all(row["accepted"] for row in history)
    for row, record in zip(history, reference.records, strict=True):
        assert row["lower_gradients"] == record.lower_gradients
        assert row["hessian_vector_products"] == record.hessian_vector_products
        assert row["upper_value"] == pytest.approx(record.upper_value, rel=1e-12)
    assert torch.allclose(state["theta"], reference.theta, rtol=0, atol=1e-12)
    assert torch.allclose(state["x"], reference.x, rtol=0, atol=1e-12)
    assert not torch.equal(state["theta"], torch.full_like(state["theta"], config.theta0))


def test_every_round_sent_is_counted_in_its_step(tmp_path: Path) -> None:
    history, _ = federated(small(), tmp_path)
    total = 0
    for row in history:
        # One send_and_receive per gradient and per Hessian-vector product.
        assert row["rounds"] == row["lower_gradients"] + row["hessian_vector_products"] > 0
        total += row["rounds"]
        assert row["total_rounds"] == total


def test_resumed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    whole_history, whole = federated(small("max_steps=3"), tmp_path / "whole")
    run_dir = tmp_path / "split"
    federated(small("max_steps=1"), run_dir)
    resumed_history, resumed = federated(small("max_steps=3", f"resume={run_dir}"), run_dir)
    assert torch.equal(resumed["theta"], whole["theta"])
    assert torch.equal(resumed["x"], whole["x"])
    assert resumed["records"] == whole["records"]
    for left, right in zip(resumed_history, whole_history, strict=True):
        assert {k: v for k, v in left.items() if k != "wall_s"} == {
            k: v for k, v in right.items() if k != "wall_s"
        }
