"""Methods and client rules are plug-ins: the registries, and one of each added from outside.

The end-to-end test writes a toy method and a toy client rule, each one Python module
and one yaml, into a temporary directory, and runs them with ``python -m fedhyper``:
``$FEDHYPER_PLUGINS`` names the modules, ``hydra.searchpath`` the config directory, and
no file of the repository changes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedhyper.client_rules import CLIENT_RULES
from fedhyper.compose import compose_config
from fedhyper.errors import ConfigError
from fedhyper.methods import METHODS, baselines, method_names
from fedhyper.registry import PLUGINS_ENV
from fedhyper.wire import CLIENT_RULE_KEY, CLIENT_RULE_PREFIX, TrainInstruction
from tests.support.paths import ROOT

TOY_METHOD = """
from dataclasses import dataclass

import torch

from fedhyper.checks import in_range
from fedhyper.config import StrategyConfig
from fedhyper.methods import Method, register_method
from fedhyper.rules.base import ServerRule, ServerStep
from strategies.factory import rule_strategy


@dataclass
class ScaledParams(StrategyConfig):
    scale: float = 1.0


class Scaled(ServerRule):
    def __init__(self, scale):
        self.scale = scale

    def step(self, delta):
        update = [torch.mul(d, self.scale) for d in delta]
        return ServerStep(update=update, global_lr=self.scale, client_lr=None, hypergradient=0.0)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


def check(config, params):
    in_range("strategy.scale", params.scale, 0.0, 10.0, closed_high=True)


register_method(
    Method(
        "toy_scaled",
        "Toy",
        ScaledParams,
        rule_strategy,
        check,
        server_rule=lambda config, params: Scaled(params.scale),
    )
)
"""

TOY_RULE = """
from dataclasses import dataclass

from fedhyper.client_rules import ClientRuleSpec, register_client_rule
from fedhyper.config import ClientRuleConfig


@dataclass
class ShrinkSettings(ClientRuleConfig):
    factor: float = 1.0


class Shrink:
    def __init__(self, optimizer, factor):
        self.optimizer, self.factor, self.steps = optimizer, factor, 0

    def start_epoch(self):
        pass

    def before_step(self):
        pass

    def after_step(self):
        self.steps += 1
        for group in self.optimizer.param_groups:
            group["lr"] *= self.factor

    def report(self):
        return {"steps": float(self.steps)}

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


register_client_rule(
    ClientRuleSpec(
        "toy_shrink",
        ShrinkSettings,
        lambda settings, inputs: Shrink(inputs.optimizer, settings.factor),
    )
)
"""

FILES = {
    "toy_method.py": TOY_METHOD,
    "toy_rule.py": TOY_RULE,
    "conf/strategy/toy_scaled.yaml": "name: toy_scaled\nscale: 0.5\n",
    "conf/client_rule/toy_shrink.yaml": "# @package client.rule\nname: toy_shrink\nfactor: 0.5\n",
}


def test_a_method_and_a_client_rule_from_outside_run_end_to_end(tmp_path: Path) -> None:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        PLUGINS_ENV: "toy_method,toy_rule",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    command = [
        sys.executable,
        "-m",
        "fedhyper",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "strategy=toy_scaled",
        "client_rule=toy_shrink",
        "num_rounds=2",
        "partition.num_clients=4",
        "strategy.clients_per_round=2",
        "strategy.evaluate_clients_per_round=0",
        "dataset.test_examples=200",
        "client.max_steps=4",
        "logging.progress=false",
        f"logging.output_dir={run_dir}",
    ]
    subprocess.run(command, check=True, cwd=ROOT, env=env, capture_output=True)
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2
    for row in history:
        assert row["global_lr"] == 0.5  # the method's yaml sets its scale
        # The client rule halves η_0 = 0.01 after each of the 4 local steps.
        assert row["client_lr_max"] == pytest.approx(0.01)
        assert row["client_lr_min"] == pytest.approx(0.01 * 0.5**3)
    # Neither plug-in leaked into this process or the repository.
    assert "toy_scaled" not in method_names() and "toy_shrink" not in CLIENT_RULES.names()


def test_an_unimportable_plugin_module_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLUGINS_ENV, "no_such_plugin_module")
    with pytest.raises(ConfigError) as error:
        compose_config(["strategy=fedavg"])
    assert error.value.key == PLUGINS_ENV and "importable modules" in str(error.value)


def test_methods_needing_hypergradient_select_it() -> None:
    for name in method_names():
        method = METHODS.get(name)
        if method.client_rule is not None:
            config = compose_config([f"strategy={name}"])
            assert config.client.rule.name == method.client_rule
            assert TrainInstruction.from_experiment(config, 1, 0).client_rule == method.client_rule


def test_client_rule_settings_travel_as_flat_scalars() -> None:
    config = compose_config(["strategy=fedhyper_cl", "client.rule.coupling=0.3"])
    mapping = TrainInstruction.from_experiment(config, 1, 0).to_record()
    assert mapping[CLIENT_RULE_KEY] == config.client.rule.name
    assert mapping[CLIENT_RULE_PREFIX + "coupling"] == 0.3
    assert all(not isinstance(value, dict) for value in mapping.values())


def test_baselines_are_the_registered_ones() -> None:
    assert baselines() == (
        "fedavg",
        "fedavgm",
        "fedadam",
        "fedyogi",
        "fedadagrad",
        "fedexp",
        "decay_g",
        "decay_sl",
    )


def _readme_methods_rows() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Methods", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    return [row for row in cells if row[0] != "`strategy=`"]  # the header


def test_readme_methods_table_lists_exactly_the_registered_methods() -> None:
    rows = _readme_methods_rows()
    assert [re.sub(r"`", "", row[0]) for row in rows] == list(method_names())
    for row in rows:
        method = METHODS.get(row[0].strip("`"))
        assert row[1] == method.label
        assert row[2] == (f"`{method.client_rule}`" if method.client_rule else "—")
