"""The committed benchmark results: their schema, and tables reproduced from the JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from benchmarks.report import index
from benchmarks.suite import SUITES, client_overrides, hydra_commands, main, result_path
from benchmarks.tables import (
    RESULTS_DIR,
    SUITE_NAMES,
    compare_summary_row,
    compare_table,
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


def _run(strategy: str, accuracy: list[float], seed: int = 0, **cell: float) -> dict[str, Any]:
    target = 0.5
    return {
        "strategy": strategy,
        "seed": seed,
        "global_lr": cell.get("global_lr", 1.0),
        "local_lr": cell.get("local_lr", 0.01),
        "accuracy": accuracy,
        "final_accuracy": accuracy[-1],
        "best_accuracy": max(accuracy),
        "rounds_to_target": next((i + 1 for i, a in enumerate(accuracy) if a >= target), None),
        "wall_s": 1.0,
    }


PROVENANCE = {
    "profile": "cpu",
    "date": "2026-01-01T00:00:00",
    "suite_wall_s": 120.0,
    "dataset": "toy",
    "setup": {"target_accuracy": 0.5, "optimizer": "sgd"},
}

TOY_COMPARE = {
    **PROVENANCE,
    "suite": "compare",
    "runs": [
        _run(name, curve, seed)
        for name, curves in (
            # final accuracies 0.7 and 0.6: the target is 0.65; rounds 4 and 5
            ("fedavg", ([0.2, 0.4, 0.6, 0.7, 0.8], [0.3, 0.5, 0.5, 0.6, 0.7])),
            # rounds 2 and 3, final 0.7: the fastest baseline
            ("fedavgm", ([0.3, 0.7, 0.7, 0.7, 0.7], [0.3, 0.4, 0.7, 0.7, 0.7])),
            # seed 1 never reaches 0.65; finals 0.9 and 0.5333: the most accurate baseline
            ("fedyogi", ([0.2, 0.3, 0.9, 0.9, 0.9], [0.2, 0.3, 0.4, 0.6, 0.6])),
            # rounds 2 and 3 like FedAvgM; finals 0.7 and 0.7
            ("fedhyper_gm", ([0.3, 0.7, 0.7, 0.7, 0.7], [0.3, 0.4, 0.7, 0.7, 0.7])),
            # rounds 2 and 3 too, a tie broken by its higher finals, 0.8 and 0.7667
            ("fedhyper", ([0.2, 0.7, 0.8, 0.8, 0.8], [0.2, 0.3, 0.7, 0.8, 0.8])),
        )
        for seed, curve in enumerate(curves)
    ],
}


def test_compare_summary_row_is_the_hand_computed_headline() -> None:
    cells = [c.strip() for c in compare_summary_row(TOY_COMPARE).strip("|").split("|")]
    assert cells == [
        "toy",
        "cpu",
        "sgd, LR 0.01",
        "2",
        "0.650 ± 0.050",
        "4.5",
        "`fedhyper`",
        "1.80x (2.5 vs 4.5)",
        "1.00x (2.5 vs 2.5), `fedavgm`",
        "0.783 ± 0.017",
        "0.783 ± 0.017 `fedhyper`",
        "0.717 ± 0.183 `fedyogi`",
        "2 min",
        "2026-01-01",
    ]


def test_compare_table_shows_a_missed_seed_and_the_absolute_target() -> None:
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")
        for line in compare_table(TOY_COMPARE).splitlines()
        if line.startswith("| fed")
    }
    # final ± std | rounds to 0.65 | speed-up | best accuracy | rounds to 50% (secondary)
    assert rows["fedyogi"][2:7] == ["0.7167 ± 0.1833", "missed 1/2", "—", "0.7500", "3.5"]
    assert rows["fedavg"][2:7] == ["0.6500 ± 0.0500", "4.5", "1.00x", "0.7500", "2.5"]
    assert rows["fedavgm"][3:5] == ["2.5", "1.80x"]


CELLS = ((0.5, 0.01), (2.0, 0.01), (0.5, 0.1), (2.0, 0.1))
"""(alpha_0, eta_0) of a 2 x 2 robustness grid, row-major."""


def test_robustness_summary_rows_are_the_hand_computed_regrets() -> None:
    robustness = {
        **PROVENANCE,
        "suite": "robustness",
        "runs": [
            _run(arm, curve, global_lr=g, local_lr=lr)
            for arm, curves in (
                # finals (last 3 rounds) 0.2, 0.4, 0.7, 0.8: tuned FedAvg is 0.8 at (2, 0.1)
                ("fedavg", ([0.1, 0.2, 0.3], [0.4] * 3, [0.9, 0.6, 0.6], [0.8] * 3)),
                # finals 0.79, 0.8, 0.7, 0.7: regrets 1 (within), 0, 10, 10 (a tie)
                ("fedhyper", ([0.79] * 3, [0.8] * 3, [0.7] * 3, [0.7] * 3)),
            )
            for (g, lr), curve in zip(CELLS, curves, strict=True)
        ],
    }
    rows = [
        [c.strip() for c in row.strip("|").split("|")]
        for row in robustness_summary_rows(robustness)
    ]
    tuned = "0.800 (α_0 = 2, η_0 = 0.1)"
    assert [row[:4] for row in rows] == [
        ["toy", "cpu", "sgd", "`fedavg`"],
        ["toy", "cpu", "sgd", "`fedhyper`"],
    ]
    # FedAvg's own regrets: 60, 40, 10, 0
    assert rows[0][4:] == [
        tuned,
        "60.0 (α_0 = 0.5, η_0 = 0.01)",
        "25.0",
        "1/4",
        "2 min",
        "2026-01-01",
    ]
    assert rows[1][4:8] == [tuned, "10.0 (α_0 = 0.5, η_0 = 0.1)", "5.5", "2/4"]


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
        adam = to_experiment(
            compose("config", [f"experiment={preset}", *client_overrides("adam", 0.01)])
        )
        assert (adam.client.optimizer, adam.client.lr) == ("adam", 0.01)
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


def test_result_files_name_a_client_that_is_not_the_presets(tmp_path: Path) -> None:
    assert result_path("compare", "femnist", "cpu", tmp_path) == tmp_path / "compare_femnist.json"
    assert (
        result_path("compare", "femnist", "paper", tmp_path, client="adam", lr=0.01)
        == tmp_path / "compare_femnist_paper_adam_lr0.01.json"
    )
    assert client_overrides("adam", 0.001) == ["client=adam", "client.lr=0.001"]
    assert client_overrides(None, None) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--client", "adam"], "--client needs --lr"),
        (["--lr", "0"], "--lr must be positive"),
        (["--client", "rmsprop", "--lr", "0.01"], "invalid choice: 'rmsprop'"),
    ],
)
def test_a_bad_client_option_is_one_line_before_training(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main(["compare", "--dataset", "femnist", *arguments])
    assert message in capsys.readouterr().err
