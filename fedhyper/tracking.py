"""Optional Weights & Biases logging, offline unless the user has configured a key."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fedhyper.config import ExperimentConfig


class Tracker:
    """Mirror each history row to W&B when ``logging.wandb`` is on; otherwise do nothing.

    W&B runs offline (files under the run directory, ``wandb sync`` uploads them later)
    unless ``WANDB_API_KEY`` or ``WANDB_MODE`` says otherwise, so a machine without
    network access never blocks on it.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment; logged as the W&B run config.
    run_dir : Path
        The run's output directory.

    """

    def __init__(self, config: ExperimentConfig, run_dir: Path) -> None:
        self._run: Any = None
        if not config.logging.wandb:
            return
        import wandb  # imported lazily: it is slow to import and optional per run

        mode: Any = os.environ.get("WANDB_MODE") or (
            "online" if os.environ.get("WANDB_API_KEY") else "offline"
        )
        self._run = wandb.init(
            project=config.logging.wandb_project,
            config=asdict(config),
            dir=str(run_dir),
            mode=mode,
            name=run_dir.name,
            reinit="finish_previous",
        )

    def log(self, row: dict[str, Any]) -> None:
        """Log one round's figures, stepped by round number."""
        if self._run is not None:
            self._run.log(row, step=int(row["round"]))

    def finish(self) -> None:
        """Close the W&B run."""
        if self._run is not None:
            self._run.finish()
