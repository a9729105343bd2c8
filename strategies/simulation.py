"""Run an experiment in-process on Flower's simulation engine (the Hydra path).

Ray is started lean: no dashboard, a small object store, and only the CPUs and GPUs the
ClientApps use. Each ClientApp (a Ray actor) runs torch on as many threads as it has
CPUs (Ray sets ``OMP_NUM_THREADS`` from ``num_cpus``), so the workers together keep
every core busy without oversubscribing it; the clients are multiplexed over one
simulated SuperNode per worker unless ``simulation.num_supernodes`` says otherwise.

With ``RAY_ADDRESS`` set, the run attaches to that running Ray cluster instead (several
machines, or one ``ray start --head`` that a sweep's runs share, so that none of them
pays for starting Ray) and sizes the workers by the cluster's CPUs and GPUs.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
import torch
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp
from flwr.simulation import run_simulation

from clients.client_app import app as client_app
from fedhyper.config import ExperimentConfig, SimulationConfig
from fedhyper.errors import FedHyperError, one_line
from fedhyper.history import RunSummary
from strategies.callbacks import RoundCallback
from strategies.ray_cluster import (
    OBJECT_STORE_BYTES,
    RAY_ADDRESS_ENV,
    available_cpus,
    check_reachable,
)
from strategies.server_app import build_server_app


class RayClusterError(FedHyperError):
    """``RAY_ADDRESS`` names a Ray cluster that cannot be reached."""


def concurrent_clients(
    simulation: SimulationConfig, resources: Mapping[str, float] | None = None
) -> int:
    """Return how many ClientApps run at once (at least 1).

    Parameters
    ----------
    simulation : SimulationConfig
        The CPUs and GPU share of one ClientApp.
    resources : mapping or None
        Ray's ``CPU`` and ``GPU`` totals to fit them in; ``None`` means this machine's.

    Returns
    -------
    int
        The number of Ray workers that fit in the CPUs, and in the GPUs when the
        ClientApps use some.

    """
    cpus = available_cpus() if resources is None else resources.get("CPU", 0.0)
    workers = int(cpus // simulation.num_cpus_per_client)
    if simulation.num_gpus_per_client > 0:
        gpus = torch.cuda.device_count() if resources is None else resources.get("GPU", 0.0)
        workers = min(workers, math.floor(gpus / simulation.num_gpus_per_client + 1e-9))
    return max(1, workers)


def backend_config(simulation: SimulationConfig, attached: bool = False) -> dict[str, Any]:
    """Return Flower's Ray backend settings: the ClientApp's resources and a lean Ray.

    Parameters
    ----------
    simulation : SimulationConfig
        The CPUs and GPU share of one ClientApp.
    attached : bool
        Whether the run attaches to a running cluster, whose size and object store
        were set when it started (Ray refuses them as arguments then).

    Returns
    -------
    dict
        Flower's ``backend_config``.

    """
    resources = {
        "num_cpus": simulation.num_cpus_per_client,
        "num_gpus": simulation.num_gpus_per_client,
    }
    if attached:
        return {"client_resources": resources, "init_args": {}}
    gpus = torch.cuda.device_count() if simulation.num_gpus_per_client > 0 else 0
    return {
        "client_resources": resources,
        "init_args": {
            # Without an address Ray would join a cluster some `ray start` left running.
            "address": "local",
            "num_cpus": available_cpus(),
            "num_gpus": gpus,
            "include_dashboard": False,
            "object_store_memory": OBJECT_STORE_BYTES,
        },
    }


def attach_to_cluster(address: str) -> dict[str, float]:
    """Connect this process to the Ray cluster at ``address`` and return its resources.

    Flower's backend then finds Ray initialised and uses the connection; its shutdown
    at the end of the run disconnects and leaves the cluster running.

    Raises
    ------
    RayClusterError
        If no cluster answers at ``address``.

    """
    # The cluster's workers import this project's modules wherever they start, as the
    # workers of a private Ray (Flower passes its driver's path the same way).
    path = os.pathsep.join(filter(None, [*sys.path, os.environ.get("PYTHONPATH")]))
    try:
        check_reachable(address)
        ray.init(address=address, runtime_env={"env_vars": {"PYTHONPATH": path}})
    except (OSError, RuntimeError, ValueError) as error:
        raise RayClusterError(
            f"{RAY_ADDRESS_ENV}={address}: no Ray cluster to attach to ({one_line(error)}); "
            f"start one with `ray start --head`, or unset {RAY_ADDRESS_ENV} for a private Ray"
        ) from None
    resources = ray.cluster_resources()  # type: ignore[no-untyped-call]  # Ray is untyped here
    return {key: float(value) for key, value in resources.items()}


def run_on_ray(
    server_app: ServerApp,
    app: ClientApp,
    simulation: SimulationConfig,
    num_supernodes: int = 0,
) -> None:
    """Run ``server_app`` and ``app`` on Flower's Ray engine, attached or private.

    With ``RAY_ADDRESS`` set the run attaches to that cluster and sizes the simulated
    SuperNodes from its resources; without it, it starts a lean private Ray on this
    machine's CPUs (:func:`backend_config`), never one some ``ray start`` left running.

    Parameters
    ----------
    server_app, app : ServerApp, ClientApp
        The run.
    simulation : SimulationConfig
        The backend and one ClientApp's resources.
    num_supernodes : int
        How many SuperNodes to simulate; 0 sizes them as :func:`concurrent_clients`.

    Raises
    ------
    RayClusterError
        If ``RAY_ADDRESS`` is set and no cluster answers there.

    """
    address = os.environ.get(RAY_ADDRESS_ENV)
    resources = attach_to_cluster(address) if address else None
    try:
        run_simulation(
            server_app=server_app,
            client_app=app,
            num_supernodes=num_supernodes or concurrent_clients(simulation, resources),
            backend_name=simulation.backend,
            backend_config=backend_config(simulation, attached=resources is not None),
        )
    finally:
        # Flower shuts Ray down after a run; this covers a run that failed before that.
        ray.shutdown()


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
    RayClusterError
        If ``RAY_ADDRESS`` is set and no cluster answers there.
    RuntimeError
        If the simulation ended without writing its summary.

    """
    simulation = config.simulation
    run_on_ray(
        build_server_app(config, run_dir, callbacks),
        client_app,
        simulation,
        num_supernodes=simulation.num_supernodes,
    )
    try:
        return RunSummary.load(run_dir)
    except FileNotFoundError:
        raise RuntimeError(
            f"the simulation failed before finishing; see the log above ({run_dir})"
        ) from None
