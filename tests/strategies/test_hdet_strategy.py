"""FedHDET's Flower adapter fed hand-made replies: what each client is sent, what moves the base."""

from __future__ import annotations

from dataclasses import replace

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from fedhyper.compose import compose_config
from fedhyper.rules.hdet import HDETSettings, SpreadHyperparameter
from fedhyper.rules.hdet_clients import LR, WEIGHT_DECAY, ClientSpread
from fedhyper.rules.hdet_spread import replica_permutation
from fedhyper.wire import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    METRICS_RECORD,
    SCHEDULED_CLIENT_LR_KEY,
    TrainInstruction,
    TrainReport,
)
from strategies.hdet_strategy import HDETStrategy
from tests.support.grid import FixedNodes, model
from tests.support.hdet import LOSSES_THIRD_BEST

THREE = (0.9, 1.0, 1.1)
SEED = 3


@pytest.fixture(autouse=True)
def _server_identity() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def strategy(signal: str = "train_loss") -> HDETStrategy:
    settings = HDETSettings(width=0.1, seed=SEED)
    spread = ClientSpread(
        [SpreadHyperparameter(LR, 0.1, settings), SpreadHyperparameter(WEIGHT_DECAY, 1e-2)]
    )
    inner = FedAvg(min_train_nodes=3, min_available_nodes=3)
    return HDETStrategy(inner, spread, signal, probe_examples=8)


def configure(hdet: HDETStrategy, server_round: int = 1) -> list[Message]:
    instruction = TrainInstruction.from_experiment(
        compose_config(["client.weight_decay=0.01"]), server_round, 0
    )
    record = ConfigRecord(instruction.to_record())
    return list(hdet.configure_train(server_round, model([0.0, 0.0]), record, FixedNodes(3)))


def sent(message: Message) -> TrainInstruction:
    return TrainInstruction.from_record(message.content[CONFIG_RECORD])


def answer(message: Message, train_loss: float, probe: tuple[float, float] = (1.0, 1.0)) -> Message:
    instruction = sent(message)
    report = replace(
        TrainReport.from_lrs(10, train_loss, [instruction.lr]),
        probe_loss_before=probe[0],
        probe_loss_after=probe[1],
    )
    content = RecordDict(
        {ARRAYS_RECORD: model([1.0, 1.0]), METRICS_RECORD: MetricRecord(report.to_record())}
    )
    return Message(content, reply_to=message)


def lrs_by_node(messages: list[Message]) -> dict[int, float]:
    return {message.metadata.dst_node_id: sent(message).lr for message in messages}


def by_lr(messages: list[Message]) -> list[Message]:
    return sorted(messages, key=lambda message: sent(message).lr)


def test_each_node_is_sent_its_slots_learning_rate() -> None:
    messages = configure(strategy())
    # FixedNodes(3) lists nodes 1, 2, 3: node k is slot k − 1.
    levels = replica_permutation(3, SEED, 1, LR)
    for message in messages:
        slot = message.metadata.dst_node_id - 1
        assert sent(message).lr == pytest.approx(0.1 * THREE[levels[slot]], rel=1e-15)
        # The weight decay is spread too (width 1/9 by default, its own permutation).
        decay = sent(message).task.weight_decay
        assert any(decay == pytest.approx(0.01 * rho) for rho in (8 / 9, 1.0, 10 / 9))
        assert sent(message).probe_examples == 0  # only the loss_drop signal asks for it
    # Each message carries its own instruction, and the same model.
    assert len({id(message.content) for message in messages}) == 3
    assert all(ARRAYS_RECORD in message.content for message in messages)


def test_a_lower_loss_at_the_higher_lr_moves_the_base_up() -> None:
    hdet = strategy()
    messages = by_lr(configure(hdet))
    replies = [answer(m, loss) for m, loss in zip(messages, LOSSES_THIRD_BEST, strict=True)]
    _, metrics = hdet.aggregate_train(1, replies)
    # As in test_hdet_clients: Δ = 0.0025, base = 0.1 + 0.5 · 0.1 Δ.
    assert hdet.spread.base(LR) == pytest.approx(0.100125, rel=1e-12)
    assert metrics is not None and metrics[SCHEDULED_CLIENT_LR_KEY] == 0.1
    # The next round is centred on the new base.
    assert sorted(sent(m).lr for m in configure(hdet, 2)) == pytest.approx(
        [0.100125 * rho for rho in THREE]
    )


def test_the_loss_drop_signal_ranks_clients_by_their_relative_drop() -> None:
    hdet = strategy("loss_drop")
    messages = by_lr(configure(hdet))
    assert {sent(m).probe_examples for m in messages} == {8}
    # Training losses favour the low LR, but relative to their own starting loss the
    # clients end at 0.5, 0.5 and 0.5 − 0.1 ln 2: the highest LR did best.
    probes = [(4.0, 2.0), (1.0, 0.5), (1.0, LOSSES_THIRD_BEST[2] - 0.5)]
    replies = [answer(m, 1.0 - i, p) for i, (m, p) in enumerate(zip(messages, probes, strict=True))]
    hdet.aggregate_train(1, replies)
    assert hdet.spread.base(LR) == pytest.approx(0.100125, rel=1e-9)


def test_replies_left_out_of_the_aggregate_do_not_count() -> None:
    hdet = strategy()
    low, middle, _ = by_lr(configure(hdet))
    # The best client's reply never came back (or was screened out): the two left tie.
    hdet.aggregate_train(1, [answer(low, 1.0), answer(middle, 1.0)])
    assert hdet.spread.base(LR) == 0.1


def test_a_screened_out_reply_counts_as_diverged() -> None:
    hdet = strategy()
    low, middle, high = by_lr(configure(hdet))
    # The highest LR's update was rejected: weights 1/2, 1/2, 0 against 1/3 each, so
    # Δ = (0.09 + 0.1) / 6 − 0.11 / 3 = −0.005 and base = 0.1 + 0.5 · 0.1 Δ.
    hdet.observe_rejected(1, [answer(high, 1.0)])
    hdet.aggregate_train(1, [answer(low, 1.0), answer(middle, 1.0)])
    assert hdet.spread.base(LR) == pytest.approx(0.09975, rel=1e-12)
    # Counted once: the next round starts with no rejected replies.
    low, middle, _ = by_lr(configure(hdet, 2))
    before = hdet.spread.base(LR)
    hdet.aggregate_train(2, [answer(low, 1.0), answer(middle, 1.0)])
    assert hdet.spread.base(LR) == pytest.approx(before + 0.5 * 0.9 * -0.0005, rel=1e-9)


def test_the_state_round_trips_through_a_fresh_strategy() -> None:
    hdet = strategy()
    messages = by_lr(configure(hdet))
    hdet.aggregate_train(
        1, [answer(m, loss) for m, loss in zip(messages, LOSSES_THIRD_BEST, strict=True)]
    )
    fresh = strategy()
    fresh.load_state_dict(hdet.state_dict())
    assert fresh.state_dict() == hdet.state_dict()
    assert lrs_by_node(configure(fresh, 2)) == lrs_by_node(configure(hdet, 2))


def test_an_unknown_signal_is_refused() -> None:
    with pytest.raises(ValueError, match="signal must be one of"):
        strategy("accuracy")
