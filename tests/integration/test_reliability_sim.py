"""Resume, SIGKILL, determinism and client faults in real Flower simulations (Ray).

Three runs of the same experiment (FedHyper: GM on the server, CL on the clients, so the
server's momentum, accumulator and Δ_{t−1} and the clients' per-step LR all matter):

* ``straight``: six rounds in one go;
* ``killed``: ``python -m fedhyper`` killed with SIGKILL, with its whole process group
  (Ray included), while round 4 runs, i.e. after the checkpoint of round 3;
* the same directory continued with ``python -m fedhyper resume=<dir>``.

Every simulation gives its nodes fresh random ids, so identical results also show that
sampling follows partitions, not node ids.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fedhyper.checkpoint import CHECKPOINT_FILE, Checkpoint, load_checkpoint
from fedhyper.compose import compose_config
from fedhyper.errors import ConfigError
from fedhyper.faults import Fault, FaultPlan
from fedhyper.history import HISTORY_FILE, read_history
from fedhyper.sampling import Purpose, sample_clients
from strategies.runner import MODEL_FILE
from strategies.simulation import simulate
from tests.support.inprocess import comparable
from tests.support.paths import ROOT

EXPERIMENT = [
    "strategy=fedhyper",
    "partition=iid",
    "partition.num_clients=20",
    "strategy.clients_per_round=4",
    "strategy.evaluate_clients_per_round=2",
    "dataset.test_examples=500",
    "client.max_steps=5",
    "num_rounds=6",
    "logging.progress=false",
]
KILL_AFTER = 3
"""The round whose checkpoint must exist before the run is killed."""


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("straight")
    simulate(compose_config(EXPERIMENT), run_dir)
    return run_dir


def _fedhyper(*args: str, cwd: Path) -> subprocess.Popen[str]:
    # A session of its own: the kill below reaches Ray's processes and nothing else.
    return subprocess.Popen(
        [sys.executable, "-m", "fedhyper", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _checkpoint_round(run_dir: Path) -> int:
    try:
        return load_checkpoint(run_dir).server_round
    except ConfigError:  # not written yet
        return 0


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Checkpoint, int]:
    """Run, SIGKILL once round 3 is checkpointed; return the dir, its checkpoint, its rows."""
    run_dir = tmp_path_factory.mktemp("killed")
    process = _fedhyper(*EXPERIMENT, f"logging.output_dir={run_dir}", cwd=run_dir)
    try:
        deadline = time.monotonic() + 240
        while _checkpoint_round(run_dir) < KILL_AFTER:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the run did not reach round 3 in time"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    # Ray's processes die with the group; wait for the last of them.
    for _ in range(100):
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    written = len((run_dir / HISTORY_FILE).read_text().splitlines())
    return run_dir, load_checkpoint(run_dir), written


@pytest.fixture(scope="module")
def resumed(killed: tuple[Path, Checkpoint, int]) -> Path:
    run_dir = killed[0]
    process = _fedhyper(f"resume={run_dir}", cwd=run_dir)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    return run_dir


def test_sigkill_mid_run_leaves_a_loadable_checkpoint(
    killed: tuple[Path, Checkpoint, int],
) -> None:
    _, checkpoint, written = killed
    assert KILL_AFTER <= checkpoint.server_round < 6, "killed mid-run, after round 3"
    assert [row["round"] for row in checkpoint.history] == list(
        range(1, checkpoint.server_round + 1)
    )
    # The history file may hold a round the checkpoint does not (killed in between).
    assert written in (checkpoint.server_round, checkpoint.server_round + 1)
    assert all(value.isfinite().all() for value in checkpoint.arrays.values())


def test_same_seed_gives_the_same_history(
    straight: Path, killed: tuple[Path, Checkpoint, int]
) -> None:
    """Two separate processes, two sets of node ids, one history (wall time aside)."""
    _, checkpoint, _ = killed
    rounds = checkpoint.server_round
    assert comparable(checkpoint.history) == comparable(read_history(straight)[:rounds])


def test_resumed_run_ends_with_the_straight_runs_weights(straight: Path, resumed: Path) -> None:
    final, expected = torch.load(resumed / MODEL_FILE), torch.load(straight / MODEL_FILE)
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[key], expected[key]) for key in final)


def test_resumed_run_has_the_straight_runs_lr_history(straight: Path, resumed: Path) -> None:
    history, expected = read_history(resumed), read_history(straight)
    assert [row["round"] for row in history] == [1, 2, 3, 4, 5, 6]
    lr_columns = ["global_lr", "hypergradient", "client_lr_mean", "client_lr_min", "client_lr_max"]
    assert [[row[c] for c in lr_columns] for row in history] == [
        [row[c] for c in lr_columns] for row in expected
    ]
    assert comparable(history) == comparable(expected)
    assert load_checkpoint(resumed).server_round == 6
    assert sorted(p.name for p in resumed.glob(f".{CHECKPOINT_FILE}*")) == []


# --- client faults ---------------------------------------------------------------------

FAULTS = [
    "faults.crash_probability=0.25",
    "faults.delay_probability=0.05",
    "simulation.round_timeout_s=6",
]
ACCURACY_MARGIN = 0.05
"""How far below the clean run's final accuracy the faulty run may end (stated in docs)."""


def test_thirty_percent_faulty_clients_are_survived(straight: Path, tmp_path: Path) -> None:
    config = compose_config([*EXPERIMENT, *FAULTS])
    simulate(config, tmp_path)
    history = read_history(tmp_path)
    assert [row["round"] for row in history] == [1, 2, 3, 4, 5, 6]
    plan = FaultPlan.from_experiment(config)
    crashes = delays = 0
    for row in history:
        for attempt in range(row["retries"] + 1):
            sampled = sample_clients(config.seed, row["round"], attempt, Purpose.TRAIN, 20, 4)
            for partition in sampled:
                fault = plan.draw(partition, row["round"], attempt)
                crashes += fault is Fault.CRASH
                delays += fault is Fault.DELAY
    assert delays >= 1, "the seed must exercise a late reply"
    # Every injected fault is in the history; a slow machine may add genuine timeouts.
    assert sum(row["failures"] for row in history) >= crashes + delays
    assert sum(row["timeouts"] for row in history) >= delays
    assert all(row["clients"] >= 2 for row in history)
    clean = read_history(straight)[-1]["accuracy"]
    assert history[-1]["accuracy"] >= clean - ACCURACY_MARGIN
