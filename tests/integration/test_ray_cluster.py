"""Runs attached to a running Ray cluster (``RAY_ADDRESS``), and a sweep sharing one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from fedhyper.compose import compose_config
from fedhyper.history import RunSummary, read_history
from strategies.ray_cluster import RAY_ADDRESS_ENV, RayHead, check_reachable
from strategies.simulation import simulate
from tests.support.paths import ROOT

SMALL = [
    "num_rounds=2",
    "partition.num_clients=4",
    "strategy.clients_per_round=2",
    "strategy.evaluate_clients_per_round=0",
    "dataset.test_examples=200",
    "client.max_steps=3",
    "logging.progress=false",
]


@pytest.fixture(scope="module")
def ray_head() -> Iterator[RayHead]:
    head = RayHead(num_cpus=2)
    try:
        yield head
    finally:
        head.stop()


def _figures(run_dir: Path) -> list[tuple[float, float]]:
    return [(row["accuracy"], row["loss"]) for row in read_history(run_dir)]


def test_runs_attach_to_the_cluster_leave_it_running_and_learn_the_same(
    ray_head: RayHead, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(RAY_ADDRESS_ENV, raising=False)
    simulate(compose_config(SMALL), tmp_path / "private")
    monkeypatch.setenv(RAY_ADDRESS_ENV, ray_head.address)
    for run in ("first", "second"):
        simulate(compose_config(SMALL), tmp_path / run)
        assert _figures(tmp_path / run) == _figures(tmp_path / "private")
        assert not ray.is_initialized()  # disconnected
        check_reachable(ray_head.address)  # and the cluster still runs
    # The ClientApps ran as the cluster's workers, which log under its temp dir.
    assert list(ray_head.temp_dir.glob("session_*/logs/worker-*"))


def test_a_sweeps_runs_share_one_head_that_ends_with_the_sweep(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != RAY_ADDRESS_ENV}
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedhyper",
            "--multirun",
            "strategy=fedavg,fedhyper_g",
            *SMALL,
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    shared = re.findall(r"share one Ray head at (\S+)", finished.stdout + finished.stderr)
    assert len(shared) == 1
    for job in ("0-fedavg-seed0", "1-fedhyper_g-seed0"):
        assert RunSummary.load(tmp_path / job).final_accuracy > 0.0
    with pytest.raises(OSError):
        check_reachable(shared[0])
