"""Reply screening, seeded faults and poison, and reproducible client sampling."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import replace

import pytest
import torch
from flwr.app import ArrayRecord, Error, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedhyper.compose import compose_config
from fedhyper.faults import POISON_KINDS, Fault, FaultPlan, poison_state
from fedhyper.sampling import Purpose, sample_clients
from fedhyper.wire import (
    ARRAYS_RECORD,
    LR_STAT_KEYS,
    METRICS_RECORD,
    NUM_EXAMPLES_KEY,
    TrainInstruction,
    TrainReport,
)
from strategies.rounds import required_replies
from strategies.screening import array_spec, screen_replies

KEYS = ["w", "b"]


@pytest.fixture(autouse=True)
def _server_identity() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def state(offset: float = 0.0) -> dict[str, torch.Tensor]:
    return {
        "w": torch.full((3, 2), offset),
        "b": torch.full((2,), offset),
        "count": torch.tensor(4),
    }


GLOBAL = ArrayRecord(state())
SPEC = array_spec(GLOBAL)


def report(examples: int = 10, loss: float = 0.5) -> TrainReport:
    return TrainReport.from_lrs(examples, loss, [0.1, 0.2])


def reply(
    arrays: dict[str, torch.Tensor] | ArrayRecord,
    examples: int = 10,
    loss: float = 0.5,
    extra_record: bool = False,
    metrics: MetricRecord | None = None,
) -> Message:
    record = arrays if isinstance(arrays, ArrayRecord) else ArrayRecord(arrays)
    metrics = metrics or MetricRecord(report(examples, loss).to_record())
    content = RecordDict({ARRAYS_RECORD: record, METRICS_RECORD: metrics})
    if extra_record:
        content["other"] = ArrayRecord(state())
    return Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN)


def screen(replies: list[Message], ratio: float = 100.0) -> tuple[list[Message], list[str]]:
    screened = screen_replies(replies, SPEC, GLOBAL, KEYS, NUM_EXAMPLES_KEY, ratio)
    return screened.accepted, [reason for _, reason in screened.rejected]


def honest(i: int = 0) -> Message:
    return reply(state(0.01 * (i + 1)))


@pytest.mark.parametrize(
    ("make_bad", "reason"),
    [
        (lambda: reply(poison_state(state(0.01), "nan", 0)), "NaN or Inf"),
        (lambda: reply(poison_state(state(0.01), "inf", 0)), "NaN or Inf"),
        (lambda: reply(poison_state(state(0.01), "shape", 0)), "expected float32[3, 2]"),
        (lambda: reply(poison_state(state(0.01), "dtype", 0)), "float64"),
        (lambda: reply({**state(0.01), "count": torch.tensor(4.0)}), "count is float32"),
        (lambda: reply({"w": state()["w"], "count": torch.tensor(4)}), "missing ['b']"),
        (lambda: reply({**state(0.01), "extra": torch.ones(1)}), "unexpected ['extra']"),
        (lambda: reply(state(0.01), examples=0), "'num-examples' is missing or not > 0"),
        (lambda: reply(state(0.01), examples=-3), "not > 0"),
        (lambda: reply(state(0.01), loss=float("nan")), "'train-loss' is not a finite number"),
        (lambda: reply(state(0.01), extra_record=True), "not exactly one model"),
    ],
)
def test_malformed_replies_are_rejected_with_a_reason(
    make_bad: Callable[[], Message], reason: str
) -> None:
    bad = make_bad()
    accepted, reasons = screen([honest(0), bad, honest(1)])
    assert len(accepted) == 2 and bad not in accepted
    assert len(reasons) == 1 and reason in reasons[0]


def test_replies_that_are_no_training_report_are_rejected() -> None:
    renamed = {
        ("learning-rate-mean" if key == LR_STAT_KEYS["lr_mean"] else key): value
        for key, value in report().to_record().items()
    }
    replies = [reply(state(0.01 * i), metrics=MetricRecord(renamed)) for i in range(3)]
    accepted, reasons = screen(replies)
    assert not accepted
    assert reasons == ["training reply lacks the key 'lr-mean'"] * 3


def test_absurd_update_norms_are_rejected_even_among_two() -> None:
    # GLOBAL is all zeros: a model without a scale yet, so the round's median decides.
    scaled = reply(poison_state(state(0.01), "scale", 1e3))
    accepted, reasons = screen([honest(0), scaled])
    assert len(accepted) == 1 and "exceeds 100 x the median update" in reasons[0]
    # Honest updates of different sizes (one client ran 30x the steps) all pass.
    varied = [reply(state(0.01)), reply(state(0.3)), reply(state(0.05))]
    assert screen(varied)[0] == varied
    # With the check off, the scaled update passes (and the LR rules must still cope).
    assert len(screen([honest(0), scaled], ratio=0)[0]) == 2


def test_a_round_of_only_absurd_updates_is_measured_against_the_model() -> None:
    current = ArrayRecord(state(1.0))
    scaled = [reply(poison_state(state(1.0 + 0.01 * i), "scale", 1e3)) for i in range(3)]
    screened = screen_replies(scaled, SPEC, current, KEYS, NUM_EXAMPLES_KEY, 100)
    assert not screened.accepted
    assert all("x the model (" in reason for _, reason in screened.rejected)
    fine = [reply(state(1.0 + 0.01 * i)) for i in range(3)]
    assert screen_replies(fine, SPEC, current, KEYS, NUM_EXAMPLES_KEY, 100).accepted == fine


def test_error_replies_are_failures_not_rejections() -> None:
    sent = honest(0)
    failed = Message(Error(code=2, reason="boom"), reply_to=sent)
    screened = screen_replies([failed, honest(1)], SPEC, GLOBAL, KEYS, NUM_EXAMPLES_KEY, 100)
    assert screened.failed == [failed] and len(screened.accepted) == 1 and not screened.rejected


def test_required_replies_rounds_up_and_needs_one() -> None:
    config = compose_config(["reliability.min_reply_fraction=0.3"])
    assert [required_replies(config, n) for n in (1, 3, 10, 11)] == [1, 1, 3, 4]
    config = compose_config(["reliability.min_reply_fraction=0"])
    assert required_replies(config, 10) == 1


# --- faults ----------------------------------------------------------------------------


def test_faults_are_seeded_per_client_round_and_attempt() -> None:
    plan = FaultPlan(seed=3, crash=0.2, delay=0.1, poison=0.3)
    draws = [plan.draw(p, r, a) for p in range(50) for r in range(1, 21) for a in range(2)]
    assert draws == [plan.draw(p, r, a) for p in range(50) for r in range(1, 21) for a in range(2)]
    counts = Counter(draws)
    assert counts[Fault.CRASH] / len(draws) == pytest.approx(0.2, abs=0.03)
    assert counts[Fault.DELAY] / len(draws) == pytest.approx(0.1, abs=0.03)
    assert counts[Fault.POISON] / len(draws) == pytest.approx(0.3, abs=0.03)
    # A retry draws afresh, so a crashed client may answer the second attempt.
    assert [plan.draw(p, 1, 0) for p in range(50)] != [plan.draw(p, 1, 1) for p in range(50)]
    assert FaultPlan(seed=3).draw(0, 1, 0) is Fault.NONE


def test_fault_plan_travels_in_the_training_instruction() -> None:
    plan = FaultPlan(seed=1, crash=0.1, poison=0.2, poison_kind="scale")
    instruction = TrainInstruction.from_experiment(compose_config([]), 3, 1)
    with_plan = replace(instruction, faults=plan)
    assert TrainInstruction.from_record(with_plan.to_record()).faults == plan
    without = replace(instruction, faults=None)
    assert TrainInstruction.from_record(without.to_record()).faults is None


@pytest.mark.parametrize("kind", POISON_KINDS)
def test_poison_corrupts_a_copy(kind: str) -> None:
    honest_state = state(0.5)
    poisoned = poison_state(honest_state, kind, 1e3)
    assert torch.equal(honest_state["w"], torch.full((3, 2), 0.5))  # untouched
    assert torch.equal(poisoned["count"], honest_state["count"])  # integers never poisoned
    w = poisoned["w"]
    expected = {
        "nan": lambda: bool(w.isnan().all()),
        "inf": lambda: bool(w.isinf().all()),
        "scale": lambda: torch.equal(w, torch.full((3, 2), 500.0)),
        "shape": lambda: w.shape == (2, 2),
        "dtype": lambda: w.dtype == torch.float64,
    }
    assert expected[kind]()


# --- sampling --------------------------------------------------------------------------


def test_sampling_is_a_pure_function_of_seed_round_and_attempt() -> None:
    first = sample_clients(0, 5, 0, Purpose.TRAIN, 100, 10)
    assert first == sample_clients(0, 5, 0, Purpose.TRAIN, 100, 10)
    assert first == sorted(set(first)) and len(first) == 10
    others = [
        sample_clients(1, 5, 0, Purpose.TRAIN, 100, 10),
        sample_clients(0, 6, 0, Purpose.TRAIN, 100, 10),
        sample_clients(0, 5, 1, Purpose.TRAIN, 100, 10),
        sample_clients(0, 5, 0, Purpose.EVALUATE, 100, 10),
    ]
    assert all(other != first for other in others)
