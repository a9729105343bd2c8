"""Resuming a run: the strategy's and client rules' state, the generators, from a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import Strategy

from fedhyper.checkpoint import Checkpoint, restore_rng
from fedhyper.config import ExperimentConfig
from fedhyper.errors import ConfigError
from strategies.state import load_strategy_state

LOGGER = logging.getLogger("fedhyper")


def restore(
    checkpoint: Checkpoint,
    config: ExperimentConfig,
    strategy: Strategy,
    model: torch.nn.Module,
    run_dir: Path,
) -> tuple[ArrayRecord, dict[int, dict[str, float]]]:
    """Put the strategy and the random generators back where the checkpoint left them.

    Parameters
    ----------
    checkpoint : Checkpoint
        The run's last checkpoint.
    config : ExperimentConfig
        The resumed experiment.
    strategy : Strategy
        The freshly built strategy, whose state is restored in place.
    model : torch.nn.Module
        The experiment's model (the checkpoint's arrays must have its shapes).
    run_dir : Path
        The run's directory, named in errors.

    Returns
    -------
    ArrayRecord
        The global model after the checkpoint's round.
    dict of int to dict of str to float
        By client id, what the client's rule kept after its last training; empty for a
        checkpoint written before client rules' state was saved.

    Raises
    ------
    ConfigError
        For a checkpoint of another model or strategy, or with a partial history.

    """
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in checkpoint.arrays.items()}
    if found != expected or len(checkpoint.history) != checkpoint.server_round:
        raise ConfigError(
            "resume", str(run_dir), "a checkpoint of this run's model, with its full history"
        )
    try:
        load_strategy_state(strategy, checkpoint.strategy)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(
            "resume",
            str(run_dir),
            f"a checkpoint written by this run's strategy ({type(error).__name__}: {error})",
        ) from None
    restore_rng(checkpoint.rng)
    LOGGER.info("resuming %s after round %d", run_dir, checkpoint.server_round)
    if checkpoint.client_rule_states is None and config.client.rule.keeps_node_state():
        LOGGER.warning(
            "resuming with client rule %s from a checkpoint without its per-client state "
            "(written by an older version): that state restarts",
            config.client.rule.name,
        )
    return ArrayRecord(checkpoint.arrays), checkpoint.client_rule_states or {}
