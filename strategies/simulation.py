"""Run an experiment in-process on Flower's simulation engine (the Hydra path)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flwr.simulation import run_simulation

from clients.client_app import app as client_app
from fedhyper.config import ExperimentConfig
from fedhyper.history import RunSummary
from strategies.callbacks import RoundCallback
from strategies.server_app import build_server_app


def simulate(
    config: ExperimentConfig,
    run_dir: Path,
    callbacks: Sequence[RoundCallback] | None = None,
) -> RunSummary:
    """Simulate one experiment with one virtual SuperNode per client.

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
    RunSummary
        The run's headline figures.

    Raises
    ------
    RuntimeError
        If the simulation ended without writing its summary.

    """
    simulation = config.simulation
    run_simulation(
        server_app=build_server_app(config, run_dir, callbacks),
        client_app=client_app,
        num_supernodes=config.partition.num_clients,
        backend_name=simulation.backend,
        backend_config={
            "client_resources": {
                "num_cpus": simulation.num_cpus_per_client,
                "num_gpus": simulation.num_gpus_per_client,
            },
        },
    )
    try:
        return RunSummary.load(run_dir)
    except FileNotFoundError:
        raise RuntimeError(
            f"the simulation failed before finishing; see the log above ({run_dir})"
        ) from None
