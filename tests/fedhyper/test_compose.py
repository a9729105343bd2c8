"""The schema, Hydra composition, run-config equivalence and validation errors."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict

import yaml

from fedhyper.compose import CONF_DIR, CONFIG_GROUPS, compose_config, run_config_overrides
from fedhyper.config import ExperimentConfig
from fedhyper.wire import ClientTask
from tests.support.config import flower_run_config
from tests.support.paths import ROOT


def test_schema_defaults_survive_composition() -> None:
    config = compose_config(["strategy=fedavg"])
    assert config.client == ExperimentConfig().client
    assert config.strategy.name == "fedavg"


def test_pyproject_group_defaults_match_hydra_defaults() -> None:
    """`flwr run .` with no overrides builds the experiment `python -m fedhyper` builds."""
    pyproject_overrides = run_config_overrides(flower_run_config(""))
    defaults = yaml.safe_load((CONF_DIR / "config.yaml").read_text())["defaults"]
    hydra_choices = {
        k: v for entry in defaults if isinstance(entry, dict) for k, v in entry.items()
    }
    for group in CONFIG_GROUPS:
        if hydra_choices[group] is not None:
            assert f"{group}={hydra_choices[group]}" in pyproject_overrides


def test_hydra_cli_override_equals_flower_run_config() -> None:
    hydra_args = ["strategy=fedavg", "client=adam", "num_rounds=7", "client.lr=0.05"]
    printed = subprocess.run(
        [sys.executable, "-m", "fedhyper", *hydra_args, "--cfg", "job"],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    from_hydra_cli = yaml.safe_load(printed)
    run_config = flower_run_config(
        "strategy='fedavg' client='adam' overrides='num_rounds=7 client.lr=0.05'"
    )
    from_flower = compose_config(run_config_overrides(run_config))
    assert from_hydra_cli == asdict(from_flower)
    assert from_flower.client.optimizer == "adam"
    assert from_flower.client.lr == 0.05
    assert from_flower.num_rounds == 7


def test_experiment_preset_sets_the_main_job() -> None:
    config = compose_config(["experiment=main", "strategy=fedhyper_g"])
    assert (config.partition.kind, config.partition.alpha) == ("dirichlet", 0.5)
    assert (config.partition.num_clients, config.strategy.clients_per_round) == (100, 10)


def test_client_task_carries_the_experiment() -> None:
    config = compose_config(["dataset.data_dir=/data", "client.max_steps=3"])
    task = ClientTask.from_experiment(config)
    assert (task.data_dir, task.max_steps, task.cache_dir) == ("/data", 3, "")
