"""``flwr run .`` on Flower's default local federation, as a new user runs it.

The flwr CLI starts a local SuperLink (simulation, 2 SuperNodes by default) and leaves
it running; here it gets its own Flower home and free ports under ``tmp_path``, and is
ended by PID after the module's runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.deployment_cost import free_port_block
from fedhyper.data.source import resolve_data_dir
from fedhyper.history import HISTORY_FILE, RunSummary, read_history
from tests.support.paths import ROOT

SMALL = (
    "num_rounds=2 partition=iid partition.num_clients=10 strategy.clients_per_round=4 "
    "strategy.evaluate_clients_per_round=2 client.max_steps=2 dataset.test_examples=200 "
    "logging.progress=false"
)

pytestmark = pytest.mark.skipif(
    resolve_data_dir(None) is None, reason="real dataset mirror not found (../shared/data)"
)


def _pids_listening_on(port: int) -> list[int]:
    """PIDs whose command line names ``port``: the SuperLink this module started."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"127.0.0.1:{port}".encode() in command:
            pids.append(int(proc.name))
    return pids


@pytest.fixture(scope="module")
def flower_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    home = tmp_path_factory.mktemp("flwr")
    base = free_port_block(2)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "FLWR_HOME": str(home / "home"),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(base),
        "FLWR_LOCAL_CONTROL_API_PORT": str(base + 1),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FEDHYPER_OUTPUT_ROOT": str(home / "outputs"),
    }
    try:
        yield env
    finally:
        for pid in _pids_listening_on(base + 1):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _pids_listening_on(base + 1) and time.monotonic() < deadline:
            time.sleep(0.5)


def _flwr_run(env: dict[str, str], overrides: str) -> str:
    result = subprocess.run(
        ["flwr", "run", ".", "--stream", "--run-config", f"overrides='{overrides}'"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result.stdout + result.stderr


def test_flwr_run_finishes_on_the_default_federation(flower_env: dict[str, str]) -> None:
    output = _flwr_run(flower_env, SMALL)
    assert "(2 simulated SuperNodes)" in output, output
    histories = list(Path(flower_env["FEDHYPER_OUTPUT_ROOT"]).rglob(HISTORY_FILE))
    assert len(histories) == 1, output
    rows = read_history(histories[0].parent)
    assert [row["round"] for row in rows] == [1, 2]
    # Ten partitions on two nodes: every sampled client replied.
    assert [row["clients"] for row in rows] == [4, 4]
    assert RunSummary.load(histories[0].parent).final_accuracy > 0


def test_a_config_error_under_flwr_run_is_one_line(flower_env: dict[str, str]) -> None:
    output = _flwr_run(flower_env, "partition.alpha=0")
    assert "fedhyper: invalid value for 'partition.alpha': 0.0 (allowed: a number > 0)" in output
    assert "Traceback" not in output
