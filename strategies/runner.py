"""The experiment: set a run up, loop over its rounds with callbacks, write its outputs.

One round is :class:`strategies.rounds.RoundRunner`'s job; what happens around the
rounds (centralised evaluation, history, W&B, progress, checkpoints) is the callbacks'
(:mod:`strategies.callbacks`). The loop resumes from a checkpoint when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid
from omegaconf import OmegaConf

from fedhyper.atomic import atomic_write, atomic_write_text
from fedhyper.checkpoint import CONFIG_FILE, load_checkpoint
from fedhyper.config import ExperimentConfig
from fedhyper.history import RunSummary, summarise
from fedhyper.models import build_model, trainable_float_keys
from fedhyper.preflight import check_run_dir
from fedhyper.training import set_seed
from strategies.callbacks import RoundCallback, RunContext
from strategies.evaluation import CentralEvaluation
from strategies.factory import build_strategy
from strategies.federation import discover_clients
from strategies.recording import (
    Checkpoints,
    HistoryFile,
    ProgressDisplay,
    RoundTimer,
    WandbTracking,
)
from strategies.resume import restore
from strategies.rounds import RoundRunner
from strategies.screening import array_spec

MODEL_FILE = "model.pt"


def default_callbacks() -> list[RoundCallback]:
    """Return fresh instances of the callbacks a run uses unless told otherwise.

    A callback that adds figures belongs before ``RoundTimer`` (its time counts) or at
    least before ``HistoryFile`` (its figures are written).
    """
    return [
        CentralEvaluation(),
        RoundTimer(),
        HistoryFile(),
        WandbTracking(),
        ProgressDisplay(),
        Checkpoints(),
    ]


def initial_model(config: ExperimentConfig) -> torch.nn.Module:
    """Build the experiment's model with seeded initial weights."""
    set_seed(config.seed)
    return build_model(
        config.dataset.spec(), config.model.name, hidden_size=config.model.hidden_size
    )


def run_federation(
    grid: Grid,
    config: ExperimentConfig,
    run_dir: Path,
    callbacks: Sequence[RoundCallback] | None = None,
) -> RunSummary:
    """Run (or, with ``config.resume``, continue) an experiment, writing into ``run_dir``.

    Parameters
    ----------
    grid : Grid
        Flower's grid of connected SuperNodes.
    config : ExperimentConfig
        A validated experiment whose data the caller has checked
        (:func:`fedhyper.preflight.check_data`); when resuming, the one
        :func:`fedhyper.checkpoint.resume_experiment` returned.
    run_dir : Path
        Output directory (created if missing); the checkpoint is read from it.
    callbacks : sequence of RoundCallback or None
        What to do around the rounds; ``None`` means :func:`default_callbacks`.

    Returns
    -------
    RunSummary
        Final and best accuracy, rounds to target and wall time.

    Raises
    ------
    ConfigError
        For a checkpoint that does not fit the experiment.
    RoundFailedError
        If a round gets too few usable replies in all its attempts.

    """
    check_run_dir(config, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(run_dir) if config.resume else None
    atomic_write_text(
        run_dir / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.structured(replace(config, resume=None)))
    )
    directory = discover_clients(grid, config)
    model = initial_model(config)
    arrays = ArrayRecord(model.state_dict())
    trainable_keys = trainable_float_keys(model)
    strategy = build_strategy(config, trainable_keys)
    run = RunContext(config, run_dir, model, strategy, history=[])
    client_rule_states: dict[int, dict[str, float]] = {}
    if checkpoint is not None:
        arrays, client_rule_states = restore(checkpoint, config, strategy, model, run_dir)
        run.history = checkpoint.history
    rounds = RoundRunner(
        grid,
        config,
        strategy,
        directory,
        trainable_keys,
        array_spec(ArrayRecord(model.state_dict())),
        client_rule_states,
    )
    callbacks = default_callbacks() if callbacks is None else callbacks
    with ExitStack() as started:
        for callback in callbacks:
            callback.on_run_start(run)
            started.callback(callback.on_run_end, run)
        for server_round in range(len(run.history) + 1, config.num_rounds + 1):
            record = rounds.run(server_round, arrays)
            arrays = record.arrays
            # Every callback sees the round, even after one has asked to stop.
            stop = [callback.after_round(run, record) for callback in callbacks]
            run.history.append(record.row.as_dict())
            if any(stop):
                break

    state = arrays.to_torch_state_dict()
    atomic_write(run_dir / MODEL_FILE, lambda handle: torch.save(state, handle))
    summary = summarise(config.strategy.name, run.history, config.target_accuracy)
    summary.save(run_dir)
    return summary
