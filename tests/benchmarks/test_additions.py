"""Joining a later sweep to a result file: replacement, provenance, setup checks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.additions import SetupMismatchError, add_sweep
from benchmarks.suite import check_addition, hydra_commands, main, planned_setup
from benchmarks.tables import table


def _run(strategy: str, final: float, seed: int = 0) -> dict[str, Any]:
    return {
        "strategy": strategy,
        "seed": seed,
        "global_lr": 1.0,
        "local_lr": 0.01,
        "accuracy": [0.1, final],
        "final_accuracy": final,
        "best_accuracy": max(0.1, final),
        "rounds_to_target": None,
        "wall_s": 1.0,
    }


def _sweep(command: str, date: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "suite": "compare",
        "dataset": "toy",
        "profile": "cpu",
        "command": command,
        "machine": "m",
        "date": date,
        "hydra_commands": [],
        "suite_wall_s": 60.0,
        "finished": True,
        "setup": {"target_accuracy": 0.9, "optimizer": "sgd", "num_rounds": 2},
        "runs": runs,
    }


ORIGINAL = _sweep(
    "python -m benchmarks.suite compare",
    "2026-01-01",
    [_run("fedavg", 0.5), _run("fedhyper", 0.6), _run("fedavg", 0.55, seed=1)],
)


def test_a_sweep_replaces_its_runs_in_place_and_appends_the_others() -> None:
    later = _sweep(
        "python -m benchmarks.suite compare --add",
        "2026-01-02",
        [_run("fedhyper", 0.7), _run("fedhyper_auto", 0.8)],
    )
    joined = add_sweep(ORIGINAL, later)
    assert [(r["strategy"], r["seed"], r["final_accuracy"]) for r in joined["runs"]] == [
        ("fedavg", 0, 0.5),
        ("fedhyper", 0, 0.7),
        ("fedavg", 1, 0.55),
        ("fedhyper_auto", 0, 0.8),
    ]
    assert [r.get("addition") for r in joined["runs"]] == [None, 0, None, 0]
    assert joined["command"] == ORIGINAL["command"]  # the original sweep stays on top
    assert [a["date"] for a in joined["additions"]] == ["2026-01-02"]
    third = add_sweep(joined, _sweep("c3", "2026-01-03", [_run("fedavgm", 0.9)]))
    assert [a["command"] for a in third["additions"]] == [later["command"], "c3"]
    assert third["runs"][-1]["addition"] == 1
    assert "additions" not in ORIGINAL  # a pure function


def test_the_table_names_each_added_sweep_and_its_runs() -> None:
    setup = planned_setup("compare", "fashion_mnist", "cpu", [])  # all that the table names
    original = {**ORIGINAL, "setup": setup}
    later = {**_sweep("c2", "2026-01-02", [_run("fedhyper_auto", 0.8)]), "setup": setup}
    text = table(add_sweep(original, later))
    assert "Added (1 run): `c2`, m, 2026-01-02" in text
    assert "fedhyper_auto" in text
    rerun = {**_sweep("c3", "2026-01-03", [_run("fedhyper_auto", 0.85)]), "setup": setup}
    text = table(add_sweep(add_sweep(original, later), rerun))
    assert "Added (no run left: a later addition replaced them): `c2`" in text
    assert "Added (1 run): `c3`, m, 2026-01-03" in text


def test_an_interrupted_sweep_counts_its_own_runs_apart_from_the_added_ones() -> None:
    setup = planned_setup("compare", "fashion_mnist", "cpu", [])
    stopped = {**ORIGINAL, "setup": setup, "finished": False}
    assert "stopped after 3 finished runs; the rows below are those runs only." in table(stopped)
    later = {**_sweep("c2", "2026-01-02", [_run("fedhyper_auto", 0.8)]), "setup": setup}
    text = table(add_sweep(stopped, later))
    assert "stopped after 3 finished runs; the rows below are those and the added runs" in text


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("dataset", "other", "dataset: the file has 'toy', the sweep 'other'"),
        (
            "setup",
            {"target_accuracy": 0.9, "optimizer": "adam", "num_rounds": 2},
            "setup differs (optimizer 'sgd' vs 'adam')",
        ),
    ],
)
def test_another_setup_cannot_be_joined(field: str, value: Any, message: str) -> None:
    later = {**_sweep("c2", "2026-01-02", [_run("fedavg", 0.9)]), field: value}
    with pytest.raises(SetupMismatchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        add_sweep(ORIGINAL, later)


def test_the_planned_setup_is_the_one_the_runs_will_record() -> None:
    setup = planned_setup("compare", "fashion_mnist", "cpu", ["client=adam", "client.lr=0.01,0.1"])
    assert (setup["optimizer"], setup["model"], setup["num_rounds"]) == ("adam", "cnn", 20)


def test_a_mismatched_addition_stops_before_training(tmp_path: Path) -> None:
    out = tmp_path / "compare_fashion_mnist.json"
    planned = planned_setup("compare", "fashion_mnist", "cpu", [])
    existing = {**ORIGINAL, "dataset": "fashion_mnist", "setup": {**planned, "num_rounds": 50}}
    out.write_text(json.dumps(existing), encoding="utf-8")
    args = argparse.Namespace(
        suite="compare", dataset="fashion_mnist", profile="cpu", overrides=["strategy=fedavg"]
    )
    with pytest.raises(SystemExit, match="num_rounds 50 vs 20"):
        check_addition(args, out)
    out.write_text(json.dumps({**existing, "setup": planned}), encoding="utf-8")
    check_addition(args, out)  # the same setup passes


def test_legs_restrict_the_commands(tmp_path: Path) -> None:
    commands = hydra_commands("compare", "fashion_mnist", "cpu", tmp_path, ["seed=0"], ["compare"])
    assert [c[4] for c in commands] == ["+suite=compare"]


def test_an_unknown_leg_is_one_line_before_training(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "fashion_mnist", "--legs", "compare,nope", "seed=0"])
    assert "--legs: nope not in suite 'compare' (allowed: compare, compare_normalised)" in (
        capsys.readouterr().err
    )
