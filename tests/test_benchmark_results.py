"""The committed benchmark results: their schema, and tables reproduced from the JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from benchmarks.report import index
from benchmarks.suite import SUITES, hydra_commands
from benchmarks.tables import (
    RESULTS_DIR,
    SUITE_NAMES,
    compare_summary_row,
    result_files,
    robustness_summary_rows,
    table,
)
from fedhyper.compose import CONF_DIR, to_experiment

RESULT_FILES = result_files()

TOP_LEVEL: dict[str, type | tuple[type, ...]] = {
    "suite": str,
    "dataset": str,
    "profile": str,
    "command": str,
    "machine": str,
    "date": str,
    "runs": list,
}
RUN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "strategy": str,
    "seed": int,
    "global_lr": (int, float),
    "local_lr": (int, float),
    "accuracy": list,
    "final_accuracy": (int, float),
    "best_accuracy": (int, float),
    "rounds_to_target": (int, type(None)),
    "wall_s": (int, float),
}


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_there_are_result_files() -> None:
    assert RESULT_FILES, "no benchmarks/results/<suite>_<dataset>.json committed"


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.name)
def test_result_file_schema(path: Path) -> None:
    data = _load(path)
    for key, kind in TOP_LEVEL.items():
        assert isinstance(data.get(key), kind), f"{path.name}: top-level {key!r}"
    assert data["suite"] in SUITE_NAMES
    assert path.stem.startswith(f"{data['suite']}_{data['dataset']}")
    assert data["command"].startswith("python -m benchmarks.suite ")
    assert data["runs"], f"{path.name}: no runs"
    target = data["setup"]["target_accuracy"]
    for run in data["runs"]:
        for key, kind in RUN_FIELDS.items():
            assert isinstance(run.get(key), kind), f"{path.name}: run field {key!r}"
        accuracy = run["accuracy"]
        assert accuracy and all(0.0 <= a <= 1.0 for a in accuracy)
        assert run["final_accuracy"] == accuracy[-1]
        assert run["best_accuracy"] == max(accuracy)
        # rounds-to-target is the first 1-based round at or above the target
        expected = next((i + 1 for i, a in enumerate(accuracy) if a >= target), None)
        assert run["rounds_to_target"] == expected


@pytest.mark.parametrize("path", RESULT_FILES, ids=lambda p: p.name)
def test_committed_table_is_reproduced_from_the_json(path: Path) -> None:
    committed = path.with_suffix(".md").read_text(encoding="utf-8")
    assert table(_load(path)) == committed


def test_committed_index_is_reproduced_from_the_json() -> None:
    committed = (RESULTS_DIR / "README.md").read_text(encoding="utf-8")
    assert index(RESULT_FILES) == committed


def _run(strategy: str, accuracy: list[float], **cell: float) -> dict[str, Any]:
    target = 0.5
    return {
        "strategy": strategy,
        "seed": 0,
        "global_lr": cell.get("global_lr", 1.0),
        "local_lr": cell.get("local_lr", 0.01),
        "accuracy": accuracy,
        "final_accuracy": accuracy[-1],
        "best_accuracy": max(accuracy),
        "rounds_to_target": next((i + 1 for i, a in enumerate(accuracy) if a >= target), None),
        "wall_s": 1.0,
    }


CELLS = ((0.5, 0.01), (2.0, 0.01), (0.5, 0.1), (2.0, 0.1))
"""(alpha_0, eta_0) of a 2 x 2 robustness grid, row-major."""


def test_summary_rows_are_the_hand_computed_headline_figures() -> None:
    provenance = {"profile": "cpu", "date": "2026-01-01T00:00:00", "suite_wall_s": 120.0}
    compare = {
        **provenance,
        "suite": "compare",
        "dataset": "toy",
        "setup": {"target_accuracy": 0.5},
        "runs": [
            _run("fedavg", [0.1, 0.2, 0.3, 0.5, 0.6]),  # 4 rounds
            _run("fedavgm", [0.1, 0.5, 0.6, 0.6, 0.7]),  # 2 rounds: the best baseline
            _run("fedhyper", [0.1, 0.2, 0.5, 0.6, 0.8]),  # 3 rounds
            _run("fedhyper_g", [0.1, 0.2, 0.3, 0.4, 0.4]),  # never
        ],
    }
    cells = [c.strip() for c in compare_summary_row(compare).strip("|").split("|")]
    assert cells == [
        "toy",
        "cpu",
        "1",
        "50%",
        "1.33x (3.0 vs 4.0)",
        "0.67x (3.0 vs 2.0), `fedavgm`",
        "1.33x (3.0 vs 4.0), `fedhyper`",
        "0.800 `fedhyper`",
        "0.600",
        "2 min",
        "2026-01-01",
    ]
    robustness = {
        **provenance,
        "suite": "robustness",
        "dataset": "toy",
        "setup": {"target_accuracy": 0.5},
        "runs": [
            _run(arm, [final], global_lr=g, local_lr=lr)
            for arm, finals in (
                ("fedavg", (0.2, 0.4, 0.6, 0.8)),
                ("fedhyper", (0.3, 0.4, 0.5, 0.9)),
            )
            for (g, lr), final in zip(CELLS, finals, strict=True)
        ],
    }
    (row,) = robustness_summary_rows(robustness)
    cells = [c.strip() for c in row.strip("|").split("|")]
    # gains: +10, 0, -10, +10 points; the first maximum in row-major order is reported
    assert cells[2:8] == [
        "`fedhyper`",
        "4",
        "+10.0 (α_0 = 0.5, η_0 = 0.01)",
        "+2.5",
        "-10.0",
        "0.200–0.800",
    ]


# ----------------------------------------------------------------------------- the suites


@pytest.mark.parametrize(
    "preset", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*_*.yaml"))
)
def test_suite_configs_compose_and_validate(preset: str) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        normalised = to_experiment(
            compose("config", [f"experiment={preset}", "+suite=compare_normalised"])
        )
        assert (normalised.strategy.name, normalised.strategy.normalised) == ("fedhyper_gm", True)
        for arm in sorted(p.stem for p in (CONF_DIR / "arm").glob("*.yaml")):
            for global_lr in (0.5, 2.0):
                overrides = [f"experiment={preset}", "+suite=robustness", f"arm={arm}"]
                config = to_experiment(
                    compose("config", [*overrides, f"strategy.global_lr={global_lr}"])
                )
                assert config.strategy.global_lr == global_lr
                if arm == "fedavg":  # FedAvg with a global LR: FedAvgM, momentum 0, step alpha_0
                    assert config.strategy.name == "fedavgm"
                    assert (config.strategy.server_lr, config.strategy.server_momentum) == (
                        global_lr,
                        0.0,
                    )


def test_hydra_commands_put_seeds_outermost(tmp_path: Path) -> None:
    commands = hydra_commands("compare", "fashion_mnist", "cpu", tmp_path, ["num_rounds=2"])
    legs = [(argv[4], argv[6]) for argv in commands]
    assert legs == [
        (f"+suite={leg}", f"seed={seed}") for seed in "012" for leg in SUITES["compare"]
    ]
    assert all(argv[-1] == "num_rounds=2" for argv in commands)
    (only,) = hydra_commands("robustness", "fashion_mnist", "cpu", tmp_path, [])
    assert only[6] == "seed=0"  # the robustness suite's one seed wins over the preset's three
    (only,) = hydra_commands("robustness", "shakespeare", "cpu", tmp_path, ["seed=3"])
    assert only[6] == "seed=3" and only[7] == f"hydra.sweep.dir={tmp_path / 'robustness-seed3'}"
