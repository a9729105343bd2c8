"""FedHDET end to end on an in-process federation of real ClientApps."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from flwr.app import Message, MessageType

from fedhyper.checkpoint import load_checkpoint, resume_experiment
from fedhyper.compose import compose_config
from fedhyper.history import read_history
from fedhyper.rules.hdet_clients import LR
from fedhyper.rules.hdet_spread import assigned_multipliers
from fedhyper.sampling import Purpose, sample_clients
from fedhyper.wire import (
    CONFIG_RECORD,
    METRICS_RECORD,
    TrainInstruction,
    TrainReport,
    split_slots,
)
from strategies.runner import run_federation
from tests.support.inprocess import InProcessGrid, comparable, run_in_process
from tests.support.runs import config, same_weights

CLIENTS = "strategy.clients_per_round=3"


class RecordingGrid(InProcessGrid):
    """Keeps, per round, each training client's partition and the LR it reported."""

    def __init__(self, num_nodes: int) -> None:
        super().__init__(num_nodes)
        self.trained: dict[int, dict[int, float]] = {}

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        message_ids = list(super().push_messages(messages))
        for message, message_id in zip(messages, message_ids, strict=True):
            if message.metadata.message_type != MessageType.TRAIN:
                continue
            reply = self.replies[message_id].content
            _, sent = split_slots(list(message.content.keys()))
            _, received = split_slots(list(reply.keys()))
            for instruction_slot, reply_slot in zip(sent, received, strict=True):
                record = message.content[instruction_slot[CONFIG_RECORD]]
                instruction = TrainInstruction.from_record(record)
                assert instruction.partition is not None
                metrics = reply[reply_slot[METRICS_RECORD]]
                lr = TrainReport.from_record(metrics).lr_first
                self.trained.setdefault(instruction.server_round, {})[instruction.partition] = lr
        return message_ids


def test_no_spread_is_fedavg_exactly(tmp_path: Path) -> None:
    fedavg, hdet = tmp_path / "fedavg", tmp_path / "fedhdet"
    run_in_process(config("strategy=fedavg", "num_rounds=2", CLIENTS), fedavg)
    run_in_process(config("strategy=fedhdet", "strategy.spread=0", "num_rounds=2", CLIENTS), hdet)
    assert same_weights(fedavg, hdet)
    # FedHDET also logs the base LR it trained around: client.lr throughout.
    rows = comparable(read_history(hdet))
    assert [row.pop("scheduled_client_lr") for row in rows] == [0.01, 0.01]
    assert rows == [
        {k: v for k, v in row.items() if k != "scheduled_client_lr"}
        for row in comparable(read_history(fedavg))
    ]


def test_each_client_trains_at_the_base_lr_times_its_slots_multiplier(tmp_path: Path) -> None:
    # A large meta LR and the loss-drop signal, so the base moves between rounds.
    cfg = config(
        "strategy=fedhdet",
        "strategy.signal=loss_drop",
        "strategy.spread=0.5",
        "strategy.meta_lr=20",
        "num_rounds=3",
        CLIENTS,
    )
    # Two nodes for three clients a round: one node's message bundles two clients.
    grid = RecordingGrid(2)
    run_federation(grid, cfg, tmp_path)
    history = read_history(tmp_path)
    bases = [row["scheduled_client_lr"] for row in history]
    assert bases[0] == 0.01 and len(set(bases)) == 3, "the base LR must move each round"
    for row, base in zip(history, bases, strict=True):
        server_round = row["round"]
        partitions = sample_clients(cfg.seed, server_round, 0, Purpose.TRAIN, 20, 3)
        multipliers = assigned_multipliers(3, 0.5, "linear", cfg.seed, server_round, LR)
        expected = {p: base * rho for p, rho in zip(partitions, multipliers, strict=True)}
        assert grid.trained[server_round] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("global_rule", ["fedhyper_g", "fedhyper_gm", "auto"])
def test_every_global_rule_moves_the_global_lr(global_rule: str, tmp_path: Path) -> None:
    overrides = ["strategy=fedhdet", f"strategy.global_rule={global_rule}", CLIENTS]
    run_in_process(config(*overrides, "num_rounds=3"), tmp_path)
    global_lrs = [row["global_lr"] for row in read_history(tmp_path)]
    assert global_lrs[0] == 1.0  # no signal before a second update
    assert global_lrs[-1] != 1.0


@pytest.mark.parametrize(
    "settings",
    [
        ("strategy.signal=server_validation", "strategy.global_rule=auto"),
        ("strategy.signal=train_loss", "strategy.spread_weight_decay=true"),
    ],
)
def test_resume_continues_exactly_where_the_run_stopped(
    settings: tuple[str, ...], tmp_path: Path
) -> None:
    overrides = ["strategy=fedhdet", "strategy.meta_lr=20", "client.weight_decay=0.001", CLIENTS]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run_in_process(config(*overrides, *settings, "num_rounds=3"), straight)
    run_in_process(config(*overrides, *settings, "num_rounds=2"), interrupted)
    requested = compose_config([f"resume={interrupted}", "num_rounds=3"])
    run_in_process(resume_experiment(requested, ["resume", "num_rounds"]), interrupted)

    assert load_checkpoint(interrupted).server_round == 3
    assert same_weights(straight, interrupted)
    assert comparable(read_history(interrupted)) == comparable(read_history(straight))
