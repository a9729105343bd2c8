"""FedMAID's settings: defaults, overrides, one-line errors, what a resumed run may change."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from fedhyper.bilevel.config import compose_fedmaid, resumed_fedmaid
from fedhyper.errors import ConfigError


def test_the_yaml_and_overrides_compose_into_the_typed_run() -> None:
    config = compose_fedmaid(["maid.schedule=geometric", "task.num_clients=4"])
    assert config.maid.schedule == "geometric" and config.task.num_clients == 4
    assert config.theta0 == -3.0 and config.lower.solver == "accelerated"
    assert config.maid.rho == 0.9  # MAID's own default, untouched


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task.rows=5", "'task.rows'.*keys of task: train_examples"),
        ("lower.solver=newton", "'lower.solver'.*gradient, accelerated, fedavg"),
        ("maid.rho=2", r"'maid.rho'.*\(0, 1\)"),
        ("maid.rho=fast", "'maid.rho'.*type float"),
        ("task.alpha=0", "'task.alpha'.*> 0"),
        ("max_steps=0", "'max_steps'.*>= 1"),
        ("theta0.x=1", "no keys below 'theta0'"),
        ("max_steps", "key=value"),
    ],
)
def test_a_bad_setting_is_one_error_naming_its_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        compose_fedmaid([override])


def test_a_resumed_run_keeps_its_defining_settings() -> None:
    saved = OmegaConf.create({"task": {"num_clients": 3}, "max_steps": 2})
    resumed = resumed_fedmaid(saved, ["max_steps=5"], "runs/a")
    assert resumed.task.num_clients == 3 and resumed.max_steps == 5
    assert resumed.resume == "runs/a"
    with pytest.raises(ConfigError, match=r"'task\.num_clients'.*unchanged when resuming"):
        resumed_fedmaid(saved, ["task.num_clients=4"], "runs/a")
