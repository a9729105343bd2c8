"""FedMAID's ServerApp: MAID's outer loop over a federation that holds the training data.

The server holds the validation split (the upper level) and the test split (reported,
never optimised); every lower-level gradient, local-training round and Hessian-vector
product is one exchange with all clients
(:class:`~strategies.bilevel_shards.FederatedShards`). After each outer step the run
directory gets the MAID state (``checkpoint.pt``, written atomically: a resumed run
continues bit for bit) and the history, one row per step with its communication
rounds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from omegaconf import OmegaConf

from clients.client_app import app as client_app
from fedhyper.atomic import atomic_write, atomic_write_text
from fedhyper.bilevel.config import FedMAIDConfig
from fedhyper.bilevel.fashion12 import BilevelTask, load_fashion12
from fedhyper.bilevel.logistic import LabelledData, LogisticL2Problem, TrainingShards, accuracy
from fedhyper.bilevel.maid import MAID, StepRecord
from fedhyper.errors import ConfigError
from fedhyper.wire import BilevelQuery
from strategies.bilevel_shards import FederatedShards
from strategies.federation import find_partition_nodes
from strategies.simulation import run_on_ray

LOGGER = logging.getLogger("fedhyper")

CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_FILE = "history.jsonl"
SUMMARY_FILE = "summary.json"


def load_task(config: FedMAIDConfig) -> BilevelTask:
    """Load the run's 12x12 task (the server uses its validation and test parts)."""
    task = config.task
    return load_fashion12(
        train_examples=task.train_examples,
        validation_examples=task.validation_examples,
        num_clients=task.num_clients,
        alpha=task.alpha,
        seed=task.seed,
        test_examples=task.test_examples or None,
        data_dir=task.data_dir,
        cache_dir=task.cache_dir,
    )


def client_query(config: FedMAIDConfig) -> BilevelQuery:
    """Return the settings every query carries, from which a client loads its shard."""
    task = config.task
    return BilevelQuery(
        train_examples=task.train_examples,
        validation_examples=task.validation_examples,
        num_partitions=task.num_clients,
        alpha=task.alpha,
        seed=task.seed,
        data_dir=task.data_dir or "",
        cache_dir=task.cache_dir or "",
    )


def step_row(
    record: StepRecord, rounds: int, total_rounds: int, test_accuracy: float
) -> dict[str, Any]:
    """One history row: the step's record, its rounds as counted, and the test accuracy."""
    return {
        **asdict(record),
        "rounds": rounds,
        "total_rounds": total_rounds,
        "test_accuracy": test_accuracy,
    }


def start_maid(
    shards: Sequence[LabelledData] | TrainingShards, task: BilevelTask, config: FedMAIDConfig
) -> MAID:
    """Return MAID at its first point over ``shards`` and the task's validation split.

    Parameters
    ----------
    shards : sequence of LabelledData or TrainingShards
        The lower level's data: the task's own shards (centralised) or the clients' (federated).
    task : BilevelTask
        The task; its validation split is the upper level.
    config : FedMAIDConfig
        The lower-level solver, θ₀ and MAID's settings.

    Returns
    -------
    MAID
        At θ = θ₀ everywhere and x = 0, before any step.

    """
    problem = LogisticL2Problem(
        shards,
        task.validation,
        solver=config.lower.solver,
        max_lower_evaluations=config.lower.max_rounds,
        local_steps=config.lower.local_steps,
    )
    shape = problem.weight_shape()
    return MAID(
        problem,
        torch.full(shape, config.theta0, dtype=torch.float64),
        torch.zeros(shape, dtype=torch.float64),
        config.maid,
    )


def run_fedmaid(grid: Grid, config: FedMAIDConfig, run_dir: Path) -> list[dict[str, Any]]:
    """Run (or, with ``config.resume``, continue) FedMAID, writing into ``run_dir``.

    Parameters
    ----------
    grid : Grid
        The federation: one SuperNode per client, each with its ``partition-id``.
    config : FedMAIDConfig
        A validated run.
    run_dir : Path
        Output directory (created if missing); the checkpoint is read from it.

    Returns
    -------
    list of dict
        The history: one row per outer step.

    Raises
    ------
    ConfigError
        For a resumed run without a checkpoint, or too few SuperNodes.
    BilevelRoundError
        If a client does not answer a round.

    """
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = _load_checkpoint(run_dir) if config.resume else None
    atomic_write_text(
        run_dir / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.structured(replace(config, resume=None)))
    )
    task = load_task(config)
    node_ids = find_partition_nodes(
        grid, config.task.num_clients, config.simulation, "task.num_clients"
    )
    shards = FederatedShards(grid, node_ids, client_query(config), config.simulation)
    maid = start_maid(shards, task, config)
    history: list[dict[str, Any]] = []
    if checkpoint is not None:
        maid.load_state_dict(checkpoint["maid"])
        history = checkpoint["history"]
    LOGGER.info(
        "fedmaid: %d clients, %d setup rounds, writing to %s",
        len(shards.node_ids),
        shards.rounds + 1,
        run_dir,
    )
    while len(maid.records) < config.max_steps and (
        not config.max_rounds or maid.total_rounds < config.max_rounds
    ):
        started, sent = time.perf_counter(), shards.rounds
        record = maid.step()
        row = step_row(record, shards.rounds - sent, maid.total_rounds, accuracy(maid.x, task.test))
        row["wall_s"] = time.perf_counter() - started
        history.append(row)
        _save(run_dir, maid, history)
        LOGGER.info(
            "fedmaid step %d: %s, validation CE %.4f, test accuracy %.4f, %d rounds "
            "(%d lower + %d CG), %d in all",
            record.iteration,
            "accepted" if record.accepted else "rejected",
            record.upper_value,
            row["test_accuracy"],
            row["rounds"],
            record.lower_gradients,
            record.hessian_vector_products,
            row["total_rounds"],
        )
    _write_summary(run_dir, maid, history)
    return history


def _save(run_dir: Path, maid: MAID, history: list[dict[str, Any]]) -> None:
    payload = {"maid": maid.state_dict(), "history": history}
    atomic_write(run_dir / CHECKPOINT_FILE, lambda handle: torch.save(payload, handle))
    atomic_write_text(run_dir / HISTORY_FILE, "".join(json.dumps(row) + "\n" for row in history))


def _load_checkpoint(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigError("resume", str(run_dir), f"a FedMAID run directory with {CHECKPOINT_FILE}")
    loaded: dict[str, Any] = torch.load(path, weights_only=True)
    return loaded


def _write_summary(run_dir: Path, maid: MAID, history: list[dict[str, Any]]) -> None:
    weights = torch.exp(maid.theta).flatten()
    levels = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    summary = {
        "outer_steps": len(history),
        "accepted_steps": sum(row["accepted"] for row in history),
        "total_rounds": maid.total_rounds,
        "final_upper_value": history[-1]["upper_value"] if history else None,
        "final_test_accuracy": history[-1]["test_accuracy"] if history else None,
        "l2_weight_quantiles": [float(q) for q in torch.quantile(weights, levels)],
    }
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def build_fedmaid_app(config: FedMAIDConfig, run_dir: Path) -> ServerApp:
    """Make a ServerApp that runs FedMAID with its own loop over the grid."""
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        run_fedmaid(grid, config, run_dir)

    return server_app


def simulate_fedmaid(config: FedMAIDConfig, run_dir: Path) -> list[dict[str, Any]]:
    """Run FedMAID on Flower's simulation engine, one SuperNode per client.

    Returns
    -------
    list of dict
        The history the run wrote.

    Raises
    ------
    RuntimeError
        If the simulation ended without writing its summary.

    """
    run_on_ray(
        build_fedmaid_app(config, run_dir),
        client_app,
        config.simulation,
        num_supernodes=config.task.num_clients,
    )
    if not (run_dir / SUMMARY_FILE).is_file():
        raise RuntimeError(f"the simulation failed before finishing; see the log above ({run_dir})")
    return [json.loads(line) for line in (run_dir / HISTORY_FILE).read_text().splitlines()]
