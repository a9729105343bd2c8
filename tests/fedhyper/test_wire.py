"""The wire format: records both ways, strict reading, and keys spelled only in fedhyper/wire.py."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

import fedhyper.wire as wire
from fedhyper.compose import compose_config
from fedhyper.faults import FaultPlan
from fedhyper.wire import (
    BilevelQuery,
    EvaluateInstruction,
    EvaluateReport,
    FederatedEvaluation,
    NodeInfo,
    NodeQuery,
    RoundTraining,
    ServerStep,
    ShardInfo,
    ShardLoss,
    SlotFailure,
    TrainInstruction,
    TrainReport,
    WireFormatError,
    client_rule_means,
    slot_record,
    split_slots,
)
from tests.support.paths import ROOT


@pytest.fixture(autouse=True)
def _server_identity() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def instruction() -> TrainInstruction:
    config = compose_config(["client.lr=0.05", "strategy=fedhyper_cl", "client.rule.coupling=0.3"])
    return TrainInstruction.from_experiment(config, server_round=7, attempt=2)


def test_a_training_instruction_survives_the_trip() -> None:
    sent = replace(instruction(), faults=FaultPlan(seed=3, crash=0.25, poison_kind="inf"))
    received = TrainInstruction.from_record(sent.to_record())
    assert received == sent
    assert (received.server_round, received.attempt, received.lr) == (7, 2, 0.05)
    assert received.client_rule == "hypergradient"
    assert received.client_rule_settings["coupling"] == pytest.approx(0.3)
    assert received.faults is not None and received.faults.crash == 0.25


def test_a_clients_partition_and_rule_state_survive_the_trip() -> None:
    sent = replace(instruction(), partition=12, client_rule_state={"multiplier": 1.25})
    assert TrainInstruction.from_record(sent.to_record()) == sent
    assert TrainInstruction.from_record(instruction().to_record()).partition is None
    evaluation = EvaluateInstruction(3, instruction().task, partition=4)
    assert EvaluateInstruction.from_record(evaluation.to_record()) == evaluation
    late = SlotFailure("straggler", late=True)
    assert SlotFailure.from_record(late.to_record()) == late


def test_a_bundles_records_sort_into_shared_and_slots() -> None:
    names = ["arrays", slot_record("config", 1), slot_record("config", 0), "metrics@0"]
    assert split_slots(names) == (
        ["arrays"],
        [{"config": "config@0", "metrics": "metrics@0"}, {"config": "config@1"}],
    )
    with pytest.raises(WireFormatError, match=r"are not 0 \.\. n-1"):
        split_slots([slot_record("config", 1)])
    with pytest.raises(WireFormatError, match="no slot number"):
        split_slots(["config@x"])


def test_the_other_messages_survive_the_trip() -> None:
    task = instruction().task
    assert EvaluateInstruction.from_record(EvaluateInstruction(3, task).to_record()).task == task
    report = TrainReport.from_lrs(40, 0.7, [0.1, 0.3, 0.2], {"multiplier": 1.5})
    assert TrainReport.from_record(report.to_record()) == report
    assert NodeInfo.from_record(NodeInfo(5).to_record()) == NodeInfo(5)
    assert NodeInfo.from_record(NodeInfo(None).to_record()) == NodeInfo(None)
    assert NodeQuery.from_record(NodeQuery("cuda").to_record()) == NodeQuery("cuda")


def test_a_training_report_summarises_the_step_learning_rates() -> None:
    report = TrainReport.from_lrs(40, 0.7, [0.1, 0.3, 0.2])
    assert report.steps == 3
    assert (report.lr_first, report.lr_last, report.lr_min, report.lr_max) == (0.1, 0.2, 0.1, 0.3)
    assert report.lr_mean == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop(wire.LR_KEY), "training instruction lacks the key 'lr'"),
        (lambda r: r.pop("batch_size"), "lacks the key 'batch_size'"),
        (lambda r: r.update({"learning-rate": 0.1}), "unknown key 'learning-rate'"),
        (lambda r: r.update({wire.ATTEMPT_KEY: "0"}), "'attempt' holds '0', not a int"),
        (lambda r: r.update({wire.ATTEMPT_KEY: True}), "'attempt' holds True, not a int"),
        (lambda r: r.update({"fault-crash": 0.5}), "lacks the key 'fault-seed'"),
    ],
)
def test_a_malformed_instruction_names_its_key(change: object, message: str) -> None:
    record = replace(instruction(), faults=None).to_record()
    change(record)  # type: ignore[operator]
    with pytest.raises(WireFormatError, match=re.escape(message)):
        TrainInstruction.from_record(record)


def test_an_integer_stands_for_a_float_setting() -> None:
    record = {**instruction().to_record(), wire.LR_KEY: 1}
    lr = TrainInstruction.from_record(record).lr
    assert lr == 1.0 and isinstance(lr, float)


def reply(report: TrainReport | EvaluateReport) -> Message:
    content = RecordDict(
        {wire.ARRAYS_RECORD: ArrayRecord(), wire.METRICS_RECORD: MetricRecord(report.to_record())}
    )
    return Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN)


def test_flowers_average_of_the_reports_reads_back() -> None:
    """The real FedAvg aggregation, weighted by examples: 0.2 (1/4) + 0.6 (3/4) = 0.5."""
    replies = [
        reply(TrainReport.from_lrs(10, 0.2, [0.1], {"multiplier": 1.0})),
        reply(TrainReport.from_lrs(30, 0.6, [0.1], {"multiplier": 2.0})),
    ]
    _, metrics = FedAvg(weighted_by_key=wire.NUM_EXAMPLES_KEY).aggregate_train(1, replies)
    assert metrics is not None
    training = RoundTraining.from_record(metrics)
    assert training.train_loss == pytest.approx(0.5)
    # No server rule: the plain average's global LR 1 and no hypergradient or schedule.
    assert training.step == ServerStep(global_lr=1.0, hypergradient=0.0)
    metrics.update(ServerStep(1.5, 0.25, scheduled_client_lr=0.01).to_record())
    assert RoundTraining.from_record(metrics).step == ServerStep(1.5, 0.25, 0.01)
    metrics.update(ServerStep(1.5, 0.25, 0.01, clients_diverged=True).to_record())
    assert RoundTraining.from_record(metrics).step.clients_diverged
    metrics["global_lr"] = 1.0  # a misspelt key
    with pytest.raises(WireFormatError, match="unknown key 'global_lr'"):
        RoundTraining.from_record(metrics)


def test_the_client_rules_reports_average_as_the_models_do() -> None:
    """Weighted by examples: 1 (1/4) + 2 (3/4) = 1.75; the plain mean is 1.5."""
    replies = [
        reply(TrainReport.from_lrs(10, 0.2, [0.1], {"multiplier": 1.0})),
        reply(TrainReport.from_lrs(30, 0.6, [0.1], {"multiplier": 2.0})),
    ]
    for key, mean in ((wire.NUM_EXAMPLES_KEY, 1.75), (wire.UNIFORM_WEIGHT_KEY, 1.5)):
        _, metrics = FedAvg(weighted_by_key=key).aggregate_train(1, replies)
        assert metrics is not None
        assert client_rule_means(metrics) == {"multiplier": pytest.approx(mean)}
    plain = [reply(TrainReport.from_lrs(10, 0.2, [0.1]))]
    _, metrics = FedAvg(weighted_by_key=wire.NUM_EXAMPLES_KEY).aggregate_train(1, plain)
    assert metrics is not None
    assert client_rule_means(metrics) == {}


def test_the_federated_evaluation_reads_back_under_either_weighting() -> None:
    replies = [reply(EvaluateReport(0.5, 0.8, 10)), reply(EvaluateReport(1.5, 0.4, 30))]
    for key, accuracy in ((wire.NUM_EXAMPLES_KEY, 0.5), (wire.UNIFORM_WEIGHT_KEY, 0.6)):
        metrics = FedAvg(weighted_by_key=key).aggregate_evaluate(1, replies)
        assert metrics is not None
        assert FederatedEvaluation.from_record(metrics).accuracy == pytest.approx(accuracy)
    with pytest.raises(WireFormatError, match="lacks the key 'eval-accuracy'"):
        FederatedEvaluation.from_record({wire.EVAL_LOSS_KEY: 0.1})


def _spelled_keys() -> set[str]:
    """Every record name and key the wire module defines."""
    keys = {
        value
        for name, value in vars(wire).items()
        if name.isupper()
        and name.endswith(("_KEY", "_RECORD", "_PREFIX"))
        and isinstance(value, str)
    }
    return keys | set(wire.LR_STAT_KEYS.values())


NOT_MESSAGE_KEYS = {
    ("benchmarks/speed.py", "config"): "the name of a case in the result file",
    ("benchmarks/plots.py", "lr"): "a kind of plot",
    ("benchmarks/maid.py", "steps"): "a field of the MAID result file",
}
"""Literals equal to a message key that mean something else."""


def test_the_bilevel_messages_survive_the_trip_and_are_read_strictly() -> None:
    query = BilevelQuery(240, 120, 3, 0.5, 0, "", "/cache", local_steps=2, step_size=0.25)
    assert BilevelQuery.from_record(ConfigRecord(query.to_record())) == query
    info = ShardInfo(num_examples=80, smoothness=1.5, classes=10)
    assert ShardInfo.from_record(MetricRecord(info.to_record())) == info
    assert ShardLoss.from_record(MetricRecord(ShardLoss(0.7).to_record())) == ShardLoss(0.7)
    with pytest.raises(WireFormatError, match="'seed'"):
        BilevelQuery.from_record({**query.to_record(), "seed": 0.5})
    with pytest.raises(WireFormatError, match=wire.BILEVEL_CLASSES_KEY):
        ShardInfo.from_record({wire.BILEVEL_EXAMPLES_KEY: 8, wire.BILEVEL_SMOOTHNESS_KEY: 1.0})


def test_message_keys_are_spelled_only_in_the_wire_module() -> None:
    keys = _spelled_keys()
    assert {"arrays", "train-loss", "lr-mean", "server-round", "partition-id"} <= keys
    found = []
    for folder in ("clients", "strategies", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            for literal in re.findall(r"""["']([\w.-]+)["']""", source):
                where = (str(path.relative_to(ROOT)), literal)
                if literal in keys and where not in NOT_MESSAGE_KEYS:
                    found.append(where)
    assert found == []
