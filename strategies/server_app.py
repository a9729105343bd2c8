"""The Flower ServerApp: ``flwr run .`` starts here (``[tool.flwr.app.components]``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from flwr.app import Context
from flwr.common.logger import FLOWER_LOGGER
from flwr.serverapp import Grid, ServerApp

from fedhyper.checkpoint import resume_experiment
from fedhyper.compose import CONFIG_GROUPS, compose_config, run_config_overrides
from fedhyper.config import ExperimentConfig
from fedhyper.errors import FedHyperError
from fedhyper.preflight import check_data
from fedhyper.progress import show_progress_lines
from strategies.callbacks import RoundCallback
from strategies.runner import run_federation

LOGGER = logging.getLogger("fedhyper")

ENV_OUTPUT_ROOT = "FEDHYPER_OUTPUT_ROOT"
"""Folder under which ``flwr run`` writes run directories when no output_dir is set."""


def default_run_dir(config: ExperimentConfig, run_id: int) -> Path:
    """Return where a ``flwr run`` writes its outputs.

    The ServerApp runs on the SuperLink's machine, in the working directory that
    ``flower-superlink`` was started in (for the local simulation runtime: wherever the
    first ``flwr run`` started it), so a relative default would land somewhere
    surprising; the directory is logged and named after the Flower run id.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment; ``logging.output_dir`` wins when set.
    run_id : int
        Flower's run id (``flwr ls``), part of the default name.

    Returns
    -------
    Path
        ``logging.output_dir``, else ``<root>/<date>/<time>-<strategy>-run<run_id>``
        where ``<root>`` is ``$FEDHYPER_OUTPUT_ROOT`` or ``outputs`` under the working
        directory.

    """
    if config.logging.output_dir:
        return Path(config.logging.output_dir)
    now = datetime.now()
    root = Path(os.environ.get(ENV_OUTPUT_ROOT) or "outputs")
    name = f"{now:%H-%M-%S}-{config.strategy.name}-run{run_id}"
    return root / f"{now:%Y-%m-%d}" / name


def build_server_app(
    config: ExperimentConfig,
    run_dir: Path,
    callbacks: Sequence[RoundCallback] | None = None,
) -> ServerApp:
    """Make a ServerApp that runs an already-resolved experiment (the Hydra path).

    Parameters
    ----------
    config : ExperimentConfig
        A validated experiment.
    run_dir : Path
        Where the run writes its outputs.
    callbacks : sequence of RoundCallback or None
        What to do around the rounds; ``None`` means
        :func:`strategies.runner.default_callbacks`.

    Returns
    -------
    ServerApp
        The app to hand to Flower's simulation engine; it does not check the data
        again (``python -m fedhyper`` did, before starting the engine).

    """
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        run_federation(grid, config, run_dir, callbacks)

    return server_app


def experiment_from_run_config(run_config: Mapping[str, object]) -> ExperimentConfig:
    """Resolve the experiment of a ``flwr run`` from its run-config.

    Parameters
    ----------
    run_config : mapping
        ``context.run_config``: pyproject.toml's defaults fused with ``--run-config``.

    Returns
    -------
    ExperimentConfig
        The validated experiment; with ``resume`` in the overrides, the resumed run's
        saved experiment with the allowed changes.

    Raises
    ------
    ConfigError
        For any invalid setting, or a run directory that cannot be resumed.

    """
    overrides = run_config_overrides(run_config)
    config = compose_config(overrides)
    if config.resume is None:
        return config
    # Every `flwr run` sends pyproject.toml's group choices, so only the `overrides` string
    # tells what the user changed; the run's saved config.yaml decides the rest.
    keys = [override.partition("=")[0] for override in overrides]
    return resume_experiment(config, [key for key in keys if key not in CONFIG_GROUPS])


app = ServerApp()


class OneLineUserErrors(logging.Filter):
    """Log a user error the ServerApp raised as its one line, without the traceback.

    Flower marks the run failed with the error as its status details, and logs the
    exception with its traceback; for a :class:`~fedhyper.errors.FedHyperError` the
    traceback says nothing the line does not.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace a user error's record by the line ``python -m fedhyper`` prints."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, FedHyperError):
            record.msg, record.args, record.exc_info = "fedhyper: %s", (error,), None
        return True


ONE_LINE_USER_ERRORS = OneLineUserErrors()
"""The one filter ``main`` adds to Flower's logger, however often it runs in a process."""


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Resolve the experiment from the run-config, then run it.

    A user error (a bad setting, data that does not load, a federation that cannot
    make up the experiment's clients) fails the run with the one line
    ``python -m fedhyper`` prints, rather than Flower's traceback.
    """
    show_progress_lines()
    FLOWER_LOGGER.addFilter(ONE_LINE_USER_ERRORS)
    config = experiment_from_run_config(context.run_config)
    # The server of a deployment may not hold the train split: its clients load it.
    check_data(config, partitions=False)
    run_dir = Path(config.resume or default_run_dir(config, context.run_id)).resolve()
    LOGGER.info("fedhyper: writing outputs to %s", run_dir)
    run_federation(grid, config, run_dir)
