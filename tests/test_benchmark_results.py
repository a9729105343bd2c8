"""The committed benchmark results: their schema, and tables reproduced from the JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from benchmarks.report import SUITE_NAMES, result_files, table
from benchmarks.suite import SUITES, hydra_commands
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
