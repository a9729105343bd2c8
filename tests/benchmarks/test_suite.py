"""The benchmark suites' configs, Hydra commands, result paths and options."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from benchmarks.compare import find_runs
from benchmarks.suite import (
    SUITES,
    client_overrides,
    hydra_commands,
    main,
    result_path,
    run_record,
)
from fedhyper.compose import CONF_DIR, store_schemas, to_experiment
from fedhyper.validation import validate
from tests.support.inprocess import run_in_process
from tests.support.runs import config


@pytest.mark.parametrize(
    "preset", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*_*.yaml"))
)
def test_suite_configs_compose_and_validate(preset: str) -> None:
    store_schemas()  # Hydra's own compose, unlike compose_config, does not register them
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
                if arm == "fedadam":  # alpha_0 scales FedAdam's own server LR
                    assert config.strategy.server_lr == pytest.approx(0.01 * global_lr)


def test_the_hdet_suites_arms_compose_and_validate() -> None:
    store_schemas()
    sweep = OmegaConf.load(CONF_DIR / "suite" / "hdet.yaml").hydra.sweeper.params
    expected = {
        "fedavg": "fedavgm",
        "fedhdet": "fedhdet",
        "fedhdet_fixed": "fedhdet",
        "fedhdet_auto": "fedhdet",
        "fedhyper": "fedhyper",
    }
    assert sweep.arm.split(",") == list(expected)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        for arm, strategy in expected.items():
            overrides = ["experiment=fashion_mnist_cpu", "+suite=hdet", f"arm={arm}"]
            config = to_experiment(compose("config", [*overrides, "client.lr=0.09"]))
            validate(config)
            assert (config.strategy.name, config.client.lr) == (strategy, 0.09)


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


def test_a_client_lr_grid_stands_in_for_lr(capsys: pytest.CaptureFixture[str]) -> None:
    # Past the client check, the next one stops it: no sweep directory to collect from.
    with pytest.raises(SystemExit):
        main(
            [
                "tuning",
                "--dataset",
                "femnist",
                "--client",
                "adam",
                "client.lr=0.001,0.01",
                "--collect-only",
            ]
        )
    assert "--client needs" not in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tuning", "--dataset", "femnist", "--client", "adam", "--collect-only"])
    assert "--client needs --lr or a 'client.lr=...' override" in capsys.readouterr().err


def test_a_result_row_records_the_settings_it_ran_with(tmp_path: Path) -> None:
    """A row keeps meaning what ran when a default changes after it."""
    run_in_process(
        config("strategy=fedhyper_auto", "num_rounds=1", "strategy.guard_tolerance=0"), tmp_path
    )
    record = run_record(find_runs(tmp_path)[0])
    assert record["strategy"] == "fedhyper_auto"
    assert record["settings"]["strategy"]["guard_tolerance"] == 0.0
    assert record["settings"]["strategy"]["server_momentum"] == 0.9
    assert record["settings"]["client"]["rule"]["name"] == "descent_cosine"
    assert record["settings"]["client"]["lr"] == record["local_lr"]
    assert record["diverged_rounds"] == []


def test_a_result_row_names_the_rounds_whose_clients_diverged(tmp_path: Path) -> None:
    run_in_process(config("strategy=fedhyper_auto", "num_rounds=1", "client.lr=1.0"), tmp_path)
    assert run_record(find_runs(tmp_path)[0])["diverged_rounds"] == [1]
