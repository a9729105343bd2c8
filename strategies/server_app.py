"""The Flower ServerApp: ``flwr run .`` starts here (``[tool.flwr.app.components]``)."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedhyper.compose import compose_config, run_config_overrides
from fedhyper.config import ExperimentConfig
from fedhyper.progress import show_progress_lines
from strategies.runner import run_federation

LOGGER = logging.getLogger("fedhyper")


def default_run_dir(config: ExperimentConfig) -> Path:
    """Return ``logging.output_dir``, else a fresh ``outputs/<date>/<time>-<strategy>``."""
    if config.logging.output_dir:
        return Path(config.logging.output_dir)
    now = datetime.now()
    return Path("outputs", f"{now:%Y-%m-%d}", f"{now:%H-%M-%S}-{config.strategy.name}")


def build_server_app(config: ExperimentConfig, run_dir: Path) -> ServerApp:
    """Make a ServerApp that runs an already-resolved experiment (the Hydra path).

    Parameters
    ----------
    config : ExperimentConfig
        A validated experiment.
    run_dir : Path
        Where the run writes its outputs.

    Returns
    -------
    ServerApp
        The app to hand to Flower's simulation engine.

    """
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        run_federation(grid, config, run_dir)

    return server_app


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Resolve the experiment from the run-config, then run it."""
    show_progress_lines()
    config = compose_config(run_config_overrides(context.run_config))
    run_dir = default_run_dir(config).resolve()
    LOGGER.info("fedhyper: writing outputs to %s", run_dir)
    run_federation(grid, config, run_dir)
