"""Run an experiment in-process on Flower's simulation engine (the Hydra path).

Ray is started lean: no dashboard, a small object store, and only the CPUs and GPUs the
ClientApps use. Each ClientApp (a Ray actor) runs torch on as many threads as it has
CPUs (Ray sets ``OMP_NUM_THREADS`` from ``num_cpus``), so the workers together keep
every core busy without oversubscribing it; the clients are multiplexed over one
simulated SuperNode per worker unless ``simulation.num_supernodes`` says otherwise.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from flwr.simulation import run_simulation

from clients.client_app import app as client_app
from fedhyper.config import ExperimentConfig, SimulationConfig
from fedhyper.history import RunSummary
from strategies.callbacks import RoundCallback
from strategies.server_app import build_server_app

OBJECT_STORE_BYTES = 512 * 2**20
"""Ray's shared-memory object store: a round's bundled messages (a model per client at
most) fit, where Ray's default (30 % of RAM) would reserve gigabytes."""


def available_cpus() -> int:
    """Return the cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def concurrent_clients(simulation: SimulationConfig) -> int:
    """Return how many ClientApps the machine runs at once (at least 1).

    Parameters
    ----------
    simulation : SimulationConfig
        The CPUs and GPU share of one ClientApp.

    Returns
    -------
    int
        The number of Ray workers that fit in the CPUs, and in the GPUs when the
        ClientApps use some.

    """
    workers = int(available_cpus() // simulation.num_cpus_per_client)
    if simulation.num_gpus_per_client > 0:
        gpus = torch.cuda.device_count()
        workers = min(workers, math.floor(gpus / simulation.num_gpus_per_client + 1e-9))
    return max(1, workers)


def backend_config(simulation: SimulationConfig) -> dict[str, Any]:
    """Return Flower's Ray backend settings: the ClientApp's resources and a lean Ray."""
    gpus = torch.cuda.device_count() if simulation.num_gpus_per_client > 0 else 0
    return {
        "client_resources": {
            "num_cpus": simulation.num_cpus_per_client,
            "num_gpus": simulation.num_gpus_per_client,
        },
        "init_args": {
            "num_cpus": available_cpus(),
            "num_gpus": gpus,
            "include_dashboard": False,
            "object_store_memory": OBJECT_STORE_BYTES,
        },
    }


def simulate(
    config: ExperimentConfig,
    run_dir: Path,
    callbacks: Sequence[RoundCallback] | None = None,
) -> RunSummary:
    """Simulate one experiment, its clients multiplexed over the simulated SuperNodes.

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
        num_supernodes=simulation.num_supernodes or concurrent_clients(simulation),
        backend_name=simulation.backend,
        backend_config=backend_config(simulation),
    )
    try:
        return RunSummary.load(run_dir)
    except FileNotFoundError:
        raise RuntimeError(
            f"the simulation failed before finishing; see the log above ({run_dir})"
        ) from None
