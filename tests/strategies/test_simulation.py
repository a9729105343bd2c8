"""The simulation engine's settings: a lean private Ray, or a running cluster attached."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from fedhyper.compose import compose_config
from fedhyper.config import SimulationConfig
from strategies.ray_cluster import OBJECT_STORE_BYTES, RAY_ADDRESS_ENV, available_cpus
from strategies.simulation import RayClusterError, backend_config, concurrent_clients, simulate


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_private_ray_starts_lean_and_never_joins_another_cluster() -> None:
    init_args = backend_config(SimulationConfig())["init_args"]
    assert init_args == {
        "address": "local",
        "num_cpus": available_cpus(),
        "num_gpus": 0,
        "include_dashboard": False,
        "object_store_memory": OBJECT_STORE_BYTES,
    }


def test_an_attached_run_passes_no_init_arguments_ray_would_refuse() -> None:
    config = backend_config(SimulationConfig(num_cpus_per_client=2.0), attached=True)
    assert config == {"client_resources": {"num_cpus": 2.0, "num_gpus": 0.0}, "init_args": {}}


@pytest.mark.parametrize(
    ("resources", "cpus", "gpus", "workers"),
    [
        ({"CPU": 32.0}, 1.0, 0.0, 32),
        ({"CPU": 32.0}, 4.0, 0.0, 8),
        ({"CPU": 32.0, "GPU": 2.0}, 1.0, 0.25, 8),  # the GPUs limit
        ({"CPU": 3.0, "GPU": 2.0}, 1.0, 0.25, 3),  # the CPUs limit
        ({"CPU": 1.0}, 2.0, 0.0, 1),  # at least one
    ],
)
def test_workers_fit_the_clusters_resources(
    resources: dict[str, float], cpus: float, gpus: float, workers: int
) -> None:
    simulation = SimulationConfig(num_cpus_per_client=cpus, num_gpus_per_client=gpus)
    assert concurrent_clients(simulation, resources) == workers


def test_workers_fit_this_machine_without_a_cluster() -> None:
    assert concurrent_clients(SimulationConfig()) == available_cpus()


def test_an_unreachable_cluster_is_one_line_before_any_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"127.0.0.1:{_closed_port()}"
    monkeypatch.setenv(RAY_ADDRESS_ENV, address)
    expected = f"^{RAY_ADDRESS_ENV}={address}: no Ray cluster"
    with pytest.raises(RayClusterError, match=expected) as error:
        simulate(compose_config(["num_rounds=1"]), tmp_path)
    assert "\n" not in str(error.value)
    assert not list(tmp_path.iterdir())
