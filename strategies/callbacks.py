"""The hooks a run calls around its rounds, in the style of pfl-research's callbacks.

The experiment loop (:func:`strategies.runner.run_federation`) calls every callback's
:meth:`RoundCallback.on_run_start`, then after each round :meth:`RoundCallback.
after_round` in list order, then :meth:`RoundCallback.on_run_end` in reverse order
(also when a round fails). A callback may complete the round's figures, which the
callbacks after it see, and may ask the run to stop after the round. The defaults
(:func:`strategies.runner.default_callbacks`) evaluate the global model, time the round,
write the history, mirror it to W&B, show progress and save checkpoints; pass another
list to :func:`~strategies.runner.run_federation` to add to them or replace them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.serverapp.strategy import Strategy

from fedhyper.config import ExperimentConfig
from strategies.rounds import RoundRecord

__all__ = ["RoundCallback", "RoundRecord", "RunContext"]


@dataclass
class RunContext:
    """What a run's callbacks can see of it.

    Attributes
    ----------
    config : ExperimentConfig
        The experiment.
    run_dir : Path
        Its output directory.
    model : torch.nn.Module
        A model of the experiment's architecture, for callbacks to load weights into.
    strategy : Strategy
        The strategy, holding the server rule's state.
    history : list of dict
        The rows of the rounds completed before the current one (a resumed run starts
        with its checkpoint's); the loop adds a round's row once every callback has
        seen it.

    """

    config: ExperimentConfig
    run_dir: Path
    model: torch.nn.Module
    strategy: Strategy
    history: list[dict[str, Any]]


class RoundCallback:
    """Base class of the hooks a run calls; each does nothing unless overridden."""

    def on_run_start(self, run: RunContext) -> None:
        """Prepare, before the first round (of this process, when resuming)."""

    def after_round(self, run: RunContext, record: RoundRecord) -> bool:
        """Act on a finished round.

        Parameters
        ----------
        run : RunContext
            The run.
        record : RoundRecord
            The round's new global model and figures; changes to ``record.row`` reach
            the callbacks after this one and the history.

        Returns
        -------
        bool
            ``True`` to stop the run after this round.

        """
        return False

    def on_run_end(self, run: RunContext) -> None:
        """Clean up, after the last round or when a round failed."""
