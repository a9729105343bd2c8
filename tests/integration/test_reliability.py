"""The runner under faults, poison and interruption, on an in-process federation.

Real ClientApps train real models here; only Ray is left out (see tests/support/inprocess.py).
Expected failures are computed from the same seeded fault draws and client samples the
run uses, so the history is checked number for number.
"""

from __future__ import annotations

import itertools
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity

from clients.client_app import app as client_app
from fedhyper.checkpoint import CHECKPOINT_FILE, load_checkpoint, resume_experiment
from fedhyper.compose import compose_config
from fedhyper.config import ExperimentConfig
from fedhyper.faults import POISON_KINDS, Fault, FaultPlan
from fedhyper.history import read_history
from fedhyper.methods import method_names
from fedhyper.sampling import Purpose, sample_clients
from fedhyper.wire import GLOBAL_LR_KEY, SCHEDULED_CLIENT_LR_KEY, TrainInstruction
from strategies.factory import build_strategy
from strategies.federation import discover_clients
from strategies.rounds import RoundFailedError, required_replies
from strategies.runner import MODEL_FILE
from tests.support.grid import FixedNodes, model, reply
from tests.support.inprocess import InProcessGrid, comparable, run_in_process, synthetic_app
from tests.support.runs import config, same_weights


def expected_attempts(cfg: ExperimentConfig, server_round: int) -> list[list[Fault]]:
    """The faults of each attempt of a round, as the run will draw them."""
    plan = FaultPlan.from_experiment(cfg)
    count, population = cfg.strategy.clients_per_round, cfg.partition.num_clients
    attempts = []
    for attempt in range(cfg.reliability.round_retries + 1):
        partitions = sample_clients(
            cfg.seed, server_round, attempt, Purpose.TRAIN, population, count
        )
        faults = [plan.draw(p, server_round, attempt) for p in partitions]
        attempts.append(faults)
        if sum(f is Fault.NONE for f in faults) >= required_replies(cfg, count):
            break
    return attempts


def test_clients_are_the_partitions_whatever_the_nodes() -> None:
    cfg = config()
    sampled = []
    for nodes in (2, 7):  # two federations, other sizes and random node ids
        directory = discover_clients(InProcessGrid(nodes), cfg)
        assert [client.partition for client in directory.clients] == list(range(20))
        assert len(directory.workers) == nodes
        sampled.append([directory.sample(cfg, r, 0, Purpose.TRAIN) for r in (1, 2, 3)])
    assert sampled[0] == sampled[1]


@pytest.mark.parametrize(
    ("strategy", "app"),
    [
        # Real clients: CL's per-step LR depends on the Δ_{t−1} the server restored.
        ("fedhyper", client_app),
        # Server-side state only (Flower's moments, momentum): synthetic clients suffice.
        ("universal_fedadam", synthetic_app),
        ("fedavgm", synthetic_app),
    ],
)
def test_resume_continues_exactly_where_the_run_stopped(
    strategy: str, app: ClientApp, tmp_path: Path
) -> None:
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_in_process(config(f"strategy={strategy}", "num_rounds=3"), straight, app)
    run_in_process(config(f"strategy={strategy}", "num_rounds=2"), interrupted, app)
    assert load_checkpoint(interrupted).server_round == 2
    # `python -m fedhyper resume=<dir> num_rounds=3`, as the CLI composes it.
    requested = compose_config([f"resume={interrupted}", "num_rounds=3"])
    resumed = resume_experiment(requested, ["resume", "num_rounds"])
    assert resumed.strategy.name == config(f"strategy={strategy}").strategy.name
    run_in_process(resumed, interrupted, app)

    assert same_weights(straight, interrupted)
    assert comparable(read_history(interrupted)) == comparable(read_history(straight))
    assert load_checkpoint(interrupted).server_round == 3
    # wall_s keeps counting across the interruption.
    walls = [row["wall_s"] for row in read_history(interrupted)]
    assert walls == sorted(walls)


# FedHyper-CL carrying each client's multiplier, four clients so that clients trained
# before the interruption train again after it.
CARRIED = ("strategy=fedhyper", "client.rule.carry=true", "partition.num_clients=4")


def _resume(run_dir: Path, num_rounds: int) -> ExperimentConfig:
    requested = compose_config([f"resume={run_dir}", f"num_rounds={num_rounds}"])
    return resume_experiment(requested, ["resume", "num_rounds"])


def test_resume_gives_each_client_back_its_carried_rule_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    straight, interrupted, old = tmp_path / "straight", tmp_path / "interrupted", tmp_path / "old"
    run_in_process(config(*CARRIED, "num_rounds=4"), straight)
    run_in_process(config(*CARRIED, "num_rounds=2"), interrupted)
    cfg = config(*CARRIED)
    before, after = (
        {c for r in rounds for c in sample_clients(cfg.seed, r, 0, Purpose.TRAIN, 4, 2)}
        for rounds in ((1, 2), (3, 4))
    )
    assert before & after, "a client must train on both sides of the interruption"
    saved = load_checkpoint(interrupted).client_rule_states
    assert saved is not None and saved.keys() == before
    # Round 1 has no Δ_{t−1} to move the multiplier; round 2 moves it.
    assert any(state["multiplier"] != 1.0 for state in saved.values())
    shutil.copytree(interrupted, old)

    run_in_process(_resume(interrupted, 4), interrupted)
    assert same_weights(straight, interrupted)
    assert comparable(read_history(interrupted)) == comparable(read_history(straight))
    assert (
        load_checkpoint(interrupted).client_rule_states
        == load_checkpoint(straight).client_rule_states
    )

    # A checkpoint written before the states were saved resumes, the states restarted.
    checkpoint = torch.load(old / CHECKPOINT_FILE, weights_only=True)
    del checkpoint["client_rule_states"]
    torch.save(checkpoint, old / CHECKPOINT_FILE)
    with caplog.at_level(logging.WARNING, logger="fedhyper"):
        run_in_process(_resume(old, 4), old)
    assert "without its per-client state" in caplog.text
    assert [row["round"] for row in read_history(old)] == [1, 2, 3, 4]
    assert not same_weights(straight, old)


def test_crashed_clients_are_retried_and_the_rule_sees_only_completed_rounds(
    tmp_path: Path,
) -> None:
    cfg = config(
        "strategy=fedhyper_g",
        "strategy.hyper_lr=50",
        "num_rounds=4",
        "faults.crash_probability=0.4",
        "reliability.min_reply_fraction=1.0",
        "reliability.round_retries=5",
    )
    run_in_process(cfg, tmp_path)
    history = read_history(tmp_path)
    for row in history:
        attempts = expected_attempts(cfg, row["round"])
        assert row["retries"] == len(attempts) - 1
        assert row["failures"] == sum(f is Fault.CRASH for faults in attempts for f in faults)
        assert row["clients"] == 2 and row["rejected"] == row["timeouts"] == 0
    assert any(row["retries"] > 0 for row in history), "the seed must exercise a retry"
    # A failed attempt never reaches the rule: α follows the rule round by round.
    for previous, row in itertools.pairwise(history):
        alpha = min(max(previous["global_lr"] + 50 * row["hypergradient"], 0.2), 5.0)
        assert row["global_lr"] == pytest.approx(alpha, rel=1e-9)


def first_failing_round(cfg: ExperimentConfig) -> int | None:
    """The first round whose every attempt lacks a usable reply, if any."""
    for server_round in range(1, cfg.num_rounds + 1):
        attempts = expected_attempts(cfg, server_round)
        last = attempts[-1]
        if sum(f is Fault.NONE for f in last) < required_replies(cfg, len(last)):
            return server_round
    return None


def test_too_few_replies_stop_the_run_with_one_clear_line(tmp_path: Path) -> None:
    settings = [
        "num_rounds=4",
        "faults.crash_probability=0.5",
        "reliability.min_reply_fraction=1.0",
        "reliability.round_retries=1",
    ]
    # The first seed whose run completes a round before one fails.
    cfg, failing = next(
        (cfg, failing)
        for seed in range(100)
        if (failing := first_failing_round(cfg := config(*settings, f"seed={seed}")))
        not in (None, 1)
    )
    with pytest.raises(RoundFailedError) as error:
        run_in_process(cfg, tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert f"round {failing} stopped the run" in message
    assert "reliability.round_retries=1" in message and "injected crash" in message
    # The rounds before it are saved and can be resumed.
    assert load_checkpoint(tmp_path).server_round == failing - 1


@pytest.mark.parametrize("strategy", method_names())
def test_poisoned_updates_never_reach_any_strategy(strategy: str, tmp_path: Path) -> None:
    kind = POISON_KINDS[method_names().index(strategy) % len(POISON_KINDS)]
    cfg = config(
        f"strategy={strategy}",
        "num_rounds=2",
        "strategy.evaluate_clients_per_round=0",
        "faults.poison_probability=0.5",
        f"faults.poison={kind}",
    )
    run_in_process(cfg, tmp_path, synthetic_app)
    history = read_history(tmp_path)
    poisoned = [
        sum(f is Fault.POISON for faults in expected_attempts(cfg, r) for f in faults)
        for r in (1, 2)
    ]
    assert [row["rejected"] for row in history] == poisoned and sum(poisoned) > 0
    final = torch.load(tmp_path / MODEL_FILE)
    assert all(bool(v.isfinite().all()) for v in final.values() if v.is_floating_point())
    assert all(np.isfinite(row["accuracy"]) and np.isfinite(row["global_lr"]) for row in history)


@pytest.fixture
def _server_identity() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


BOUNDED = {
    "fedhyper_g": "global",
    "fedhyper_gm": "global",
    "fedhyper": "global",
    "universal_fedadam": "global",
    "universal_fedavgm": "global",
    "universal_fedexp": "global",
    "fedhyper_sl": "client",
}
"""The strategies with a learning-rate rule, and which learning rate it bounds."""


@pytest.mark.usefixtures("_server_identity")
@pytest.mark.parametrize("strategy", BOUNDED)
def test_learning_rates_stay_in_bounds_whatever_the_inner_products(strategy: str) -> None:
    """Updates near float32's limit make the inner products ±inf, or NaN (inf - inf)."""
    cfg = compose_config(
        [
            f"strategy={strategy}",
            "partition.num_clients=2",
            "strategy.clients_per_round=2",
            "strategy.evaluate_clients_per_round=2",
            "strategy.hyper_lr=1e6",
        ]
    )
    built = build_strategy(cfg, ["w"])
    # Each method's settings hold the bounds of its own rule.
    s: Any = cfg.strategy
    lr = cfg.client.lr
    if strategy == "fedhyper_g":
        low, high = s.global_lr_min, s.global_lr_max
    elif strategy == "fedhyper_sl":
        low, high = lr * s.local_lr_min_factor, lr * s.local_lr_max_factor
    else:
        low, high = 1 + s.acc_min, 1 + s.acc_max
    huge = 3e38
    current = model([0.0, 0.0])
    # Same sign, opposite sign, then a mix whose per-tensor products overflow both ways.
    for server_round, delta in enumerate(
        [[huge, huge], [huge, huge], [-huge, -huge], [huge, -huge], [1e-30, 0.0]], start=1
    ):
        replies = [reply(model(delta), 1) for _ in range(2)]
        instruction = TrainInstruction.from_experiment(cfg, server_round, 0)
        built.configure_train(
            server_round, current, ConfigRecord(instruction.to_record()), FixedNodes(2)
        )
        _, metrics = built.aggregate_train(server_round, replies)
        assert metrics is not None
        value = metrics[SCHEDULED_CLIENT_LR_KEY if BOUNDED[strategy] == "client" else GLOBAL_LR_KEY]
        assert isinstance(value, float) and low <= value <= high, (server_round, value)
