"""The plots of the benchmark result files, drawn from hand-made runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure

from benchmarks.plots import plot_ablation, plot_compare, plot_path, plot_robustness

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

PROVENANCE = {
    "profile": "cpu",
    "date": "2026-01-01T00:00:00",
    "machine": "toy machine",
    "dataset": "toy",
    "setup": {"target_accuracy": 0.5, "optimizer": "sgd"},
}


def _run(strategy: str, accuracy: list[float], global_lr: float, local_lr: float) -> dict[str, Any]:
    rounds = len(accuracy)
    return {
        "strategy": strategy,
        "seed": 0,
        "global_lr": global_lr,
        "local_lr": local_lr,
        "accuracy": accuracy,
        "global_lr_per_round": [global_lr * 2**r for r in range(rounds)],
        "local_lr_per_round": [local_lr / 2**r for r in range(rounds)],
    }


def _written(paths: list[Path]) -> list[str]:
    return [path.name for path in paths if path.read_bytes().startswith(PNG_SIGNATURE)]


def test_a_compare_result_gets_an_accuracy_and_a_log_scaled_lr_plot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scales: list[str] = []
    save = Figure.savefig

    def save_and_note_scales(figure: Figure, *args: Any, **kwargs: Any) -> None:
        scales.extend(axis.get_yscale() for axis in figure.axes)
        save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", save_and_note_scales)
    data = {
        **PROVENANCE,
        "suite": "compare",
        "runs": [
            _run("fedavg", [0.2, 0.4, 0.6, 0.7], 1.0, 0.01),
            _run("fedhyper_auto", [0.3, 0.6, 0.7, 0.8], 1.0, 0.01),
        ],
    }
    paths = plot_compare(data, tmp_path / "compare_toy")
    assert paths == [plot_path(tmp_path / "compare_toy", kind) for kind in ("accuracy", "lr")]
    assert _written(paths) == ["compare_toy_accuracy.png", "compare_toy_lr.png"]
    # Accuracy on a linear axis; both learning rates, which move by factors, on log axes.
    assert scales == ["linear", "linear", "log", "log"]


def test_a_partial_robustness_grid_gets_its_heatmap(tmp_path: Path) -> None:
    runs = [
        _run("fedavg", [0.5, 0.6, 0.7], global_lr, local_lr)
        for global_lr in (0.5, 1.0)
        for local_lr in (0.001, 0.01)
    ]
    # An added arm that ran one column of the grid only: its other cells stay empty.
    runs += [_run("fedhdet", [0.6, 0.7, 0.8], 1.0, local_lr) for local_lr in (0.001, 0.01)]
    data = {**PROVENANCE, "suite": "robustness", "runs": runs}
    paths = plot_robustness(data, tmp_path / "robustness_toy")
    assert _written(paths) == ["robustness_toy_heatmap.png"]


def test_an_ablation_gets_one_bar_panel_per_cell(tmp_path: Path) -> None:
    runs = [
        _run(arm, accuracy, 1.0, local_lr)
        for local_lr in (0.001, 0.01)
        for arm, accuracy in (("fedavg", [0.5, 0.6]), ("fedhyper_auto", [0.6, 0.7]))
    ]
    data = {**PROVENANCE, "suite": "ablation", "runs": runs}
    paths = plot_ablation(data, tmp_path / "ablation_toy")
    assert _written(paths) == ["ablation_toy_bars.png"]
