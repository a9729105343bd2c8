"""End to end: a few rounds of real Flower simulation on real Fashion-MNIST."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from fedhyper.compose import compose_config
from fedhyper.history import RunSummary, read_history
from strategies.runner import MODEL_FILE, initial_model
from strategies.simulation import simulate

SMALL = [
    "num_rounds=3",
    "partition.num_clients=4",
    "strategy.clients_per_round=2",
    "strategy.evaluate_clients_per_round=2",
    "dataset.test_examples=500",
    "client.max_steps=5",
    "logging.progress=false",
]


@pytest.fixture(scope="module")
def fedhyper_g_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    run_dir = tmp_path_factory.mktemp("fedhyper_g")
    config = compose_config(["strategy=fedhyper_g", "strategy.hyper_lr=50", *SMALL])
    simulate(config, run_dir)
    return run_dir, read_history(run_dir)


def test_run_writes_its_outputs(fedhyper_g_run: tuple[Path, list[dict]]) -> None:
    run_dir, history = fedhyper_g_run
    assert [row["round"] for row in history] == [1, 2, 3]
    assert {"config.yaml", "history.jsonl", "summary.json", MODEL_FILE} <= {
        p.name for p in run_dir.iterdir()
    }
    summary = RunSummary.load(run_dir)
    assert summary.final_accuracy == history[-1]["accuracy"]
    for row in history:
        assert row["clients"] == 2 and row["failures"] == 0
        assert 0.0 <= row["federated_accuracy"] <= 1.0
        # SGD with a constant LR: every client trained at exactly client.lr.
        assert row["client_lr_min"] == row["client_lr_max"] == 0.01


def test_global_model_changed(fedhyper_g_run: tuple[Path, list[dict]]) -> None:
    run_dir, history = fedhyper_g_run
    config = compose_config(["strategy=fedhyper_g", *SMALL])
    initial = initial_model(config).state_dict()
    final = torch.load(run_dir / MODEL_FILE)
    assert set(final) == set(initial)
    assert any(not torch.equal(final[k], initial[k]) for k in initial)
    assert history[-1]["accuracy"] > 0.2


def test_global_lr_history_obeys_the_rule(fedhyper_g_run: tuple[Path, list[dict]]) -> None:
    _, history = fedhyper_g_run
    hyper_lr, low, high = 50.0, 0.2, 5.0
    assert history[0]["global_lr"] == 1.0 and history[0]["hypergradient"] == 0.0
    for previous, row in itertools.pairwise(history):
        assert row["hypergradient"] != 0.0
        expected = min(max(previous["global_lr"] + hyper_lr * row["hypergradient"], low), high)
        assert row["global_lr"] == pytest.approx(expected, rel=1e-9)
    # The hyper-LR is large enough that α must have left 1.
    assert history[-1]["global_lr"] != 1.0


def run_small(strategy: str, tmp_path: Path, *overrides: str) -> list[dict]:
    simulate(compose_config([f"strategy={strategy}", *SMALL, *overrides]), tmp_path)
    return read_history(tmp_path)


def test_clients_train_with_the_lr_that_fedhyper_sl_schedules(tmp_path: Path) -> None:
    history = run_small("fedhyper_sl", tmp_path, "strategy.hyper_lr=100")
    for row in history:
        assert row["client_lr_min"] == row["client_lr_max"] == row["scheduled_client_lr"]
    assert history[0]["scheduled_client_lr"] == 0.01
    # The reference resets η every round; here the schedule must have moved it.
    assert history[-1]["scheduled_client_lr"] != 0.01
    assert 0.001 <= history[-1]["scheduled_client_lr"] <= 0.1


def test_fedhyper_full_adapts_the_client_lr_within_a_round(tmp_path: Path) -> None:
    history = run_small("fedhyper", tmp_path)
    for row in history:
        assert row["client_lr_max"] > row["client_lr_min"] >= 0.001
        # Growth is capped at +10% per step: at most 5 steps of max_steps=5, 4 counted.
        assert row["client_lr_max"] <= 0.01 * 1.1**4 + 1e-12
    assert history[-1]["global_lr"] != 1.0
