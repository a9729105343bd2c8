"""The server's round loop: any Flower strategy, plus history, evaluation and display.

It follows :meth:`flwr.serverapp.strategy.Strategy.start` (configure, send, aggregate,
evaluate) and adds what an experiment needs around it: per-client learning-rate
statistics, centralised evaluation, a flushed per-round history, W&B and the live
display.
"""

from __future__ import annotations

import logging
import math
import random
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from omegaconf import OmegaConf

from fedhyper.config import ExperimentConfig
from fedhyper.data.federated import test_data
from fedhyper.data.registry import DATASETS
from fedhyper.errors import ConfigError
from fedhyper.history import HistoryWriter, RunSummary, summarise
from fedhyper.models import build_model, trainable_float_keys
from fedhyper.progress import RoundProgress
from fedhyper.task import ClientTask
from fedhyper.tracking import Tracker
from fedhyper.training import evaluate, pick_device, set_seed
from strategies.factory import build_strategy

LOGGER = logging.getLogger("fedhyper")

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.pt"


@dataclass
class CentralEvaluator:
    """Evaluate global arrays on the centralised test set, with one reusable model."""

    model: torch.nn.Module
    dataset: torch.utils.data.TensorDataset
    device: torch.device

    def __call__(self, arrays: ArrayRecord) -> tuple[float, float]:
        """Return ``(loss, accuracy)`` of ``arrays`` on the test set."""
        self.model.load_state_dict(arrays.to_torch_state_dict())
        result = evaluate(self.model, self.dataset, device=self.device)
        return result.loss, result.accuracy


def client_lr_stats(replies: Iterable[Message]) -> dict[str, float]:
    """Summarise the learning rates the clients report having trained with.

    Parameters
    ----------
    replies : iterable of Message
        Training replies; failed ones are skipped.

    Returns
    -------
    dict
        ``client_lr_mean``, ``client_lr_min`` and ``client_lr_max`` over all clients'
        per-step trajectories (mean of their means; min of mins; max of maxes).

    """
    metrics = [
        next(iter(reply.content.metric_records.values()))
        for reply in replies
        if not reply.has_error()
    ]
    if not metrics:
        return {
            "client_lr_mean": float("nan"),
            "client_lr_min": float("nan"),
            "client_lr_max": float("nan"),
        }
    return {
        "client_lr_mean": statistics.fmean(_metric(m, "lr-mean") for m in metrics),
        "client_lr_min": min(_metric(m, "lr-min") for m in metrics),
        "client_lr_max": max(_metric(m, "lr-max") for m in metrics),
    }


def _metric(record: MetricRecord | None, key: str, default: float = math.nan) -> float:
    value = default if record is None else record.get(key, default)
    if not isinstance(value, int | float):
        raise TypeError(f"metric {key!r} must be a scalar, got {value!r}")
    return float(value)


def initial_model(config: ExperimentConfig) -> torch.nn.Module:
    """Build the experiment's model with seeded initial weights."""
    spec = DATASETS[config.dataset.name]
    set_seed(config.seed)
    return build_model(
        config.model.name,
        num_classes=spec.num_classes,
        in_channels=spec.input_shape[0],
        hidden_size=config.model.hidden_size,
    )


def wait_for_federation(grid: Grid, config: ExperimentConfig) -> None:
    """Wait until one SuperNode per partition has connected; fail clearly otherwise.

    SuperNodes register asynchronously (also in simulation), so the count is polled
    for up to ``simulation.node_wait_s`` seconds.
    """
    expected = config.partition.num_clients
    deadline = time.monotonic() + config.simulation.node_wait_s
    while (connected := len(list(grid.get_node_ids()))) < expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if connected != expected:
        raise ConfigError(
            "partition.num_clients",
            expected,
            f"{connected}, the number of SuperNodes connected after "
            f"{config.simulation.node_wait_s:g} s (num-supernodes of the federation)",
        )


def run_federation(grid: Grid, config: ExperimentConfig, run_dir: Path) -> RunSummary:
    """Run every round of an experiment and write its outputs into ``run_dir``.

    Parameters
    ----------
    grid : Grid
        Flower's grid of connected SuperNodes.
    config : ExperimentConfig
        A validated experiment.
    run_dir : Path
        Output directory (created if missing).

    Returns
    -------
    RunSummary
        Final and best accuracy, rounds to target and wall time.

    """
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    wait_for_federation(grid, config)
    # Flower samples clients with the `random` module.
    random.seed(config.seed)

    model = initial_model(config)
    arrays = ArrayRecord(model.state_dict())
    strategy = build_strategy(config, trainable_float_keys(model))
    evaluator = CentralEvaluator(
        model,
        test_data(
            config.dataset.name,
            data_dir=config.dataset.data_dir,
            cache_dir=config.dataset.cache_dir,
            max_examples=config.dataset.test_examples,
        ),
        pick_device("auto"),
    )
    task = ClientTask.from_experiment(config).to_mapping()
    history = HistoryWriter(run_dir)
    tracker = Tracker(config, run_dir)
    timeout = config.simulation.round_timeout_s

    start = time.perf_counter()
    with RoundProgress(
        config.strategy.name, config.num_rounds, enabled=config.logging.progress
    ) as progress:
        for server_round in range(1, config.num_rounds + 1):
            arrays, row = _run_round(strategy, grid, server_round, arrays, task, evaluator, timeout)
            row["wall_s"] = time.perf_counter() - start
            history.append(row)
            tracker.log(row)
            progress.advance(row, server_round)
    tracker.finish()

    torch.save(arrays.to_torch_state_dict(), run_dir / MODEL_FILE)
    summary = summarise(config.strategy.name, history.rows, config.target_accuracy)
    summary.save(run_dir)
    return summary


def _run_round(
    strategy: Strategy,
    grid: Grid,
    server_round: int,
    arrays: ArrayRecord,
    task: dict[str, Any],
    evaluator: CentralEvaluator,
    timeout: float,
) -> tuple[ArrayRecord, dict[str, Any]]:
    """One round: train, aggregate, federated and centralised evaluation."""
    replies = list(
        grid.send_and_receive(
            strategy.configure_train(server_round, arrays, ConfigRecord(task), grid),
            timeout=timeout,
        )
    )
    new_arrays, train_metrics = strategy.aggregate_train(server_round, replies)
    if new_arrays is not None:
        arrays = new_arrays
    eval_replies = grid.send_and_receive(
        strategy.configure_evaluate(server_round, arrays, ConfigRecord(task), grid),
        timeout=timeout,
    )
    eval_metrics = strategy.aggregate_evaluate(server_round, eval_replies)
    loss, accuracy = evaluator(arrays)
    failures = sum(reply.has_error() for reply in replies)
    row: dict[str, Any] = {
        "round": server_round,
        "accuracy": accuracy,
        "loss": loss,
        "train_loss": _metric(train_metrics, "train-loss"),
        "federated_accuracy": _metric(eval_metrics, "eval-accuracy"),
        "federated_loss": _metric(eval_metrics, "eval-loss"),
        "global_lr": _metric(train_metrics, "global-lr", 1.0),
        "hypergradient": _metric(train_metrics, "hypergradient", 0.0),
        **client_lr_stats(replies),
        "scheduled_client_lr": _metric(train_metrics, "scheduled-client-lr"),
        "clients": len(replies) - failures,
        "failures": failures,
    }
    return arrays, row
