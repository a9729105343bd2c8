"""Callbacks around the rounds: added to the defaults, replacing one, stopping a run."""

from __future__ import annotations

from pathlib import Path

import torch

from fedhyper.compose import compose_config
from fedhyper.config import ExperimentConfig
from fedhyper.history import read_history
from strategies.callbacks import RoundCallback, RoundRecord, RunContext
from strategies.evaluation import CentralEvaluation
from strategies.runner import MODEL_FILE, default_callbacks
from tests.support.inprocess import run_in_process, synthetic_app


def config(*overrides: str) -> ExperimentConfig:
    return compose_config(
        [
            "partition=iid",
            "partition.num_clients=20",
            "strategy=fedavg",
            "strategy.clients_per_round=2",
            "strategy.evaluate_clients_per_round=1",
            "dataset.test_examples=100",
            "num_rounds=3",
            "logging.progress=false",
            *overrides,
        ]
    )


class WeightNorm(RoundCallback):
    """Adds the norm of the global model's first layer to the history, and logs its calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.norms: list[float] = []

    def on_run_start(self, run: RunContext) -> None:
        self.calls.append(f"start {len(run.history)}")

    def after_round(self, run: RunContext, record: RoundRecord) -> bool:
        first = next(iter(record.arrays.values()))
        norm = float(torch.from_numpy(first.numpy()).norm())
        record.row.extra["first_layer_norm"] = norm
        self.norms.append(norm)
        self.calls.append(f"round {record.row.round} after {len(run.history)} rows")
        return False

    def on_run_end(self, run: RunContext) -> None:
        self.calls.append(f"end {len(run.history)}")


def test_an_added_callback_sees_every_round_and_adds_a_column(tmp_path: Path) -> None:
    added = WeightNorm()
    run_in_process(config(), tmp_path, synthetic_app, callbacks=[added, *default_callbacks()])
    assert added.calls == [
        "start 0",
        "round 1 after 0 rows",
        "round 2 after 1 rows",
        "round 3 after 2 rows",
        "end 3",
    ]
    history = read_history(tmp_path)
    assert [row["first_layer_norm"] for row in history] == added.norms
    assert list(history[0])[-2:] == ["wall_s", "first_layer_norm"]  # after the fixed columns
    final = next(iter(torch.load(tmp_path / MODEL_FILE).values()))
    assert float(final.norm()) == added.norms[-1]


class RoundAsAccuracy(RoundCallback):
    """Stands in for the centralised evaluation: accuracy = round / 10, loss = 1 / round."""

    def after_round(self, run: RunContext, record: RoundRecord) -> bool:
        record.row.accuracy, record.row.loss = record.row.round / 10, 1 / record.row.round
        return False


def test_a_default_callback_can_be_replaced(tmp_path: Path) -> None:
    callbacks = [
        RoundAsAccuracy() if isinstance(callback, CentralEvaluation) else callback
        for callback in default_callbacks()
    ]
    summary = run_in_process(config(), tmp_path, synthetic_app, callbacks=callbacks)
    history = read_history(tmp_path)
    assert [row["accuracy"] for row in history] == [0.1, 0.2, 0.3]
    assert [row["loss"] for row in history] == [1.0, 0.5, 1 / 3]
    assert (summary.final_accuracy, summary.best_accuracy) == (0.3, 0.3)


class StopAfter(RoundCallback):
    def __init__(self, last_round: int) -> None:
        self.last_round = last_round

    def after_round(self, run: RunContext, record: RoundRecord) -> bool:
        return record.row.round == self.last_round


def test_a_callback_can_stop_the_run(tmp_path: Path) -> None:
    seen = WeightNorm()
    callbacks = [StopAfter(2), *default_callbacks(), seen]
    summary = run_in_process(config("num_rounds=5"), tmp_path, synthetic_app, callbacks=callbacks)
    # The callbacks after the one that stopped still see round 2.
    assert seen.calls[-2:] == ["round 2 after 1 rows", "end 2"]
    assert [row["round"] for row in read_history(tmp_path)] == [1, 2]
    assert summary.wall_s > 0 and (tmp_path / MODEL_FILE).is_file()
