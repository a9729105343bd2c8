"""Checkpoint files, generator states, every strategy's state, and writes killed mid-way."""

from __future__ import annotations

import inspect
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi, Strategy
from flwr.supercore.task_identity import TaskIdentity

from fedhyper.atomic import atomic_write, atomic_write_text
from fedhyper.checkpoint import (
    CHECKPOINT_FILE,
    Checkpoint,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from fedhyper.compose import compose_config
from fedhyper.methods import method_names
from fedhyper.wire import TrainInstruction
from strategies.factory import build_strategy
from strategies.state import FLOWER_STATE, load_strategy_state, strategy_state
from tests.support.grid import KEYS, FixedNodes, model, reply
from tests.support.paths import ROOT


def test_atomic_write_keeps_the_old_content_when_writing_fails(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    atomic_write_text(path, "old")

    def half_then_fail(handle: object) -> None:
        assert hasattr(handle, "write")
        handle.write(b"new but incomp")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_checkpoint_round_trips_and_restores_the_generators(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    rng = capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    history = [{"round": 1, "accuracy": 0.5, "wall_s": 1.0, "federated_loss": float("nan")}]
    arrays = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(7)}
    strategy = {"rule": {"alpha": 1.5, "previous_delta": [torch.ones(3)]}, "client_lr": None}
    save_checkpoint(tmp_path, Checkpoint(1, arrays, strategy, rng, history))

    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    loaded = load_checkpoint(tmp_path)
    restore_rng(loaded.rng)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert loaded.server_round == 1
    assert torch.equal(loaded.arrays["w"], arrays["w"]) and loaded.arrays["n"].dtype == torch.int64
    assert loaded.strategy["rule"]["alpha"] == 1.5 and loaded.strategy["client_lr"] is None
    assert torch.equal(loaded.strategy["rule"]["previous_delta"][0], torch.ones(3))
    assert loaded.history[0]["round"] == 1 and np.isnan(loaded.history[0]["federated_loss"])


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import torch
    from fedhyper.checkpoint import Checkpoint, capture_rng, save_checkpoint

    run_dir = Path(sys.argv[1])
    zeros = torch.zeros(2_000_000)  # 8 MB: the process spends most of its time writing
    for server_round in range(1, 10_000):
        rows = [{"round": r} for r in range(1, server_round + 1)]
        arrays = {"w": zeros + server_round}
        save_checkpoint(run_dir, Checkpoint(server_round, arrays, {}, capture_rng(), rows))
        print(server_round, flush=True)
    """
)


def test_sigkill_while_writing_leaves_the_last_checkpoint_loadable(tmp_path: Path) -> None:
    """Kill -9 a process that writes checkpoints back to back, then load what is left."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    try:
        for _ in range(3):  # three checkpoints complete, the fourth is being written
            writer.stdout.readline()
        time.sleep(0.05)
    finally:
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    loaded = load_checkpoint(tmp_path)
    assert loaded.server_round >= 3
    assert [row["round"] for row in loaded.history] == list(range(1, loaded.server_round + 1))
    assert bool((loaded.arrays["w"] == loaded.server_round).all())
    # The next save clears what the killed write left behind.
    save_checkpoint(tmp_path, loaded)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]


# --- every strategy's state ------------------------------------------------------------


@pytest.fixture(autouse=True)
def _server_identity() -> None:
    """Messages carry their sender; set it as Flower's in-process simulation does."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def _strategy(name: str) -> Strategy:
    overrides = [
        f"strategy={name}",
        "partition.num_clients=2",
        "strategy.clients_per_round=2",
        "strategy.evaluate_clients_per_round=2",
    ]
    return build_strategy(compose_config(overrides), KEYS)


def _replies(server_round: int, current: ArrayRecord) -> list[Message]:
    """Two clients' replies near ``current``, the same for the same round."""
    rng = np.random.default_rng(server_round)
    w = current["w"].numpy()
    return [
        reply(model((w + rng.normal(0.1, 0.2, size=2)).tolist(), float(i), 3), examples=1 + i)
        for i in range(2)
    ]


def _round(
    strategy: Strategy, server_round: int, current: ArrayRecord
) -> tuple[ArrayRecord, dict[str, object]]:
    config = ConfigRecord(TrainInstruction.from_experiment(compose_config([]), 1, 0).to_record())
    messages = list(strategy.configure_train(server_round, current, config, FixedNodes(2)))
    new, metrics = strategy.aggregate_train(server_round, _replies(server_round, current))
    assert new is not None
    sent = {key: dict(record) for key, record in messages[0].content.config_records.items()}
    return new, {"metrics": dict(metrics or {}), "config": sent}


@pytest.mark.parametrize("name", method_names())
def test_every_strategy_continues_identically_from_its_saved_state(
    name: str, tmp_path: Path
) -> None:
    original = _strategy(name)
    current = model([0.0, 0.0])
    for server_round in (1, 2):
        current, _ = _round(original, server_round, current)
    # Through a real checkpoint file: the state must survive weights-only loading.
    state = strategy_state(original)
    save_checkpoint(tmp_path, Checkpoint(2, {}, state, capture_rng(), [{}, {}]))
    restored = _strategy(name)
    load_strategy_state(restored, load_checkpoint(tmp_path).strategy)

    expected, expected_info = _round(original, 3, current)
    resumed, resumed_info = _round(restored, 3, current)
    for key in expected:
        assert expected[key].numpy().tobytes() == resumed[key].numpy().tobytes(), key
    assert resumed_info == expected_info


@pytest.mark.parametrize("flower_class", [FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad])
def test_flower_state_table_covers_every_attribute(flower_class: type[FedAvg]) -> None:
    """A Flower upgrade that adds state to these classes must be classified here."""
    settings = {
        name
        for cls in flower_class.__mro__
        if "__init__" in vars(cls)
        for name in inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    }
    derived_settings = {"server_opt"}  # FedAvgM: whether momentum or a server LR is set
    state = next(FLOWER_STATE[cls] for cls in flower_class.__mro__ if cls in FLOWER_STATE)
    attributes = set(vars(flower_class()))
    assert attributes - settings - derived_settings == set(state)
