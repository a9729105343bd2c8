"""The ablation tables, from hand-made runs with recorded settings."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.ablations import ablation_cells, ablation_summary_cells, setting_changes

FULL_SETTINGS = {
    "strategy": {"name": "fedhyper_auto", "restart": True, "hyper_lr": 1.0, "probe_examples": 32},
    "client": {"lr": 0.01, "rule": {"name": "descent_cosine", "horizon": "round"}},
}


def _settings(strategy: dict[str, Any] | None = None, **client: Any) -> dict[str, Any]:
    return {
        "strategy": {**FULL_SETTINGS["strategy"], **(strategy or {})},
        "client": {**FULL_SETTINGS["client"], **client},
    }


def test_setting_changes_are_the_overrides_from_the_full_rule() -> None:
    assert setting_changes(FULL_SETTINGS, FULL_SETTINGS) == ()
    no_restart = _settings({"restart": False, "hyper_lr": 0.0})
    assert setting_changes(no_restart, FULL_SETTINGS) == (
        "strategy.restart=false",
        "strategy.hyper_lr=0",
    )
    step = _settings(rule={"name": "descent_cosine", "horizon": "step"})
    assert setting_changes(step, FULL_SETTINGS) == ("client.rule.horizon=step",)
    without_probe = _settings()
    del without_probe["strategy"]["probe_examples"]
    assert setting_changes(without_probe, FULL_SETTINGS) == ("~strategy.probe_examples",)


def test_a_baseline_is_named_by_its_method_and_its_own_settings() -> None:
    fedavgm = {
        "strategy": {"name": "fedavgm", "server_momentum": 0.9},
        "client": {**FULL_SETTINGS["client"], "rule": {"name": "constant"}},
    }
    # The full rule's own settings are not listed as removed: another method has its own.
    assert setting_changes(fedavgm, FULL_SETTINGS) == (
        "strategy=fedavgm",
        "strategy.server_momentum=0.9",
        "client.rule.name=constant",
    )


def _run(
    strategy: str, accuracy: list[float], seed: int = 0, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    run: dict[str, Any] = {
        "strategy": strategy,
        "seed": seed,
        "global_lr": 1.0,
        "local_lr": 0.01,
        "accuracy": accuracy,
    }
    if settings is not None:
        run["settings"] = settings
    return run


TOY_ABLATION = {
    "suite": "ablation",
    "runs": [
        # FedAvg's finals 0.5 and 0.7 (last 3 rounds): the target is 0.6, which seed 0 misses
        _run("fedavg", [0.1, 0.3, 0.5, 0.5, 0.5, 0.5], 0),
        _run("fedavg", [0.2, 0.4, 0.7, 0.7, 0.7, 0.7], 1),
        # finals 0.8 and 0.6: mean 0.7, std 0.1; rounds 2 and 2
        _run("fedhyper_auto", [0.4, 0.6, 0.8, 0.8, 0.8, 0.8], 0, FULL_SETTINGS),
        _run("fedhyper_auto", [0.5, 0.6, 0.6, 0.6, 0.6, 0.6], 1, FULL_SETTINGS),
        # finals 0.55 and 0.65: 10 points below the full rule; seed 0 never reaches 0.6
        _run(
            "fedhyper_auto_no_restart",
            [0.3, 0.5, 0.55, 0.55, 0.55, 0.55],
            0,
            _settings({"restart": False}),
        ),
        _run(
            "fedhyper_auto_no_restart",
            [0.3, 0.5, 0.65, 0.65, 0.65, 0.65],
            1,
            _settings({"restart": False}),
        ),
        # finals 0.75 twice: 5 points above; rounds 1 and 1
        _run("fedhyper_auto_fixed_alpha", [0.75] * 6, 0, _settings({"hyper_lr": 0.0})),
        _run("fedhyper_auto_fixed_alpha", [0.75] * 6, 1, _settings({"hyper_lr": 0.0})),
        # a baseline 20 points above: not a variant of the full rule
        _run("fedavgm", [0.9] * 6, 0, {"strategy": {"name": "fedavgm"}, "client": {}}),
    ],
}


def test_ablation_cells_are_the_hand_computed_figures() -> None:
    (cell,) = ablation_cells(TOY_ABLATION)
    assert cell.target == pytest.approx(0.6)
    full, restart, fixed = (
        cell.arm(name)
        for name in ("fedhyper_auto", "fedhyper_auto_no_restart", "fedhyper_auto_fixed_alpha")
    )
    assert full is not None and restart is not None and fixed is not None
    assert (full.metrics.final_mean, full.metrics.final_std) == pytest.approx((0.7, 0.1))
    assert full.changes == () and full.points_over_full == pytest.approx(0.0)
    assert restart.changes == ("strategy.restart=false",)
    assert restart.points_over_full == pytest.approx(-10.0)
    assert str(restart.metrics.rounds) == "missed 1/2"
    assert str(full.metrics.rounds) == "2.0"
    assert fixed.points_over_full == pytest.approx(5.0)
    # FedAvg's own settings were not recorded: what it changes is unknown, not "nothing".
    fedavg = cell.arm("fedavg")
    assert fedavg is not None and fedavg.changes is None
    assert str(fedavg.metrics.rounds) == "missed 1/2"


def test_the_index_names_the_variants_furthest_below_and_above_the_full_rule() -> None:
    (cells,) = ablation_summary_cells(TOY_ABLATION)
    assert cells == [
        "η_0 = 0.01, α_0 = 1",
        "2",
        "0.6000 ± 0.1000",
        "0.7000 ± 0.1000",
        "2",
        "`fedhyper_auto_no_restart` -10.0",
        "`fedhyper_auto_fixed_alpha` +5.0",
    ]
