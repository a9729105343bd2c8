"""Plots of the benchmark result files, drawn from the JSON alone.

* ``compare``: ``<stem>_accuracy.png`` (mean accuracy per round with a min-max band over
  seeds) and ``<stem>_lr.png`` (global and mean local LR per round);
* ``robustness`` and ``tuning``: ``<stem>_heatmap.png`` (FedAvg's final accuracy, and
  each arm's regret against the best-tuned FedAvg, per initial global LR x initial local
  LR cell);
* ``ablation``: ``<stem>_bars.png`` (each arm's final accuracy in each cell, beside the
  full rule's and FedAvg's).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from benchmarks.ablations import FULL_RULE, ablation_cells
from benchmarks.metrics import REFERENCE
from benchmarks.tables import BASELINES, compare_metrics, grids, tuned_reference

PLOT_KINDS: dict[str, tuple[str, ...]] = {
    "compare": ("accuracy", "lr"),
    "robustness": ("heatmap",),
    "tuning": ("heatmap",),
    "ablation": ("bars",),
    "hdet": ("accuracy", "lr"),
}
"""Suite -> the plots drawn for it, each saved as ``<stem>_<kind>.png``."""


def plot_path(stem: Path, kind: str) -> Path:
    """Return where the ``kind`` plot of the result ``<stem>.json`` is saved."""
    return stem.with_name(f"{stem.name}_{kind}.png")


def _stamp(figure: Any, data: dict[str, Any]) -> None:
    figure.suptitle(
        f"{data['suite']} · {data['dataset']} · profile {data['profile']} · {data['date']}\n"
        f"{data['machine']}",
        fontsize=8,
    )


def _save(figure: Any, data: dict[str, Any], stem: Path, kind: str) -> Path:
    """Stamp the figure with the result's provenance, save it as the ``kind`` plot, close it."""
    _stamp(figure, data)
    figure.tight_layout()
    path = plot_path(stem, kind)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _per_round(runs: list[dict[str, Any]], key: str) -> dict[str, np.ndarray]:
    groups: dict[str, list[list[float]]] = defaultdict(list)
    for run in runs:
        groups[run["strategy"]].append(run[key])
    return {name: np.array(values, dtype=float) for name, values in groups.items()}


def plot_compare(data: dict[str, Any], stem: Path) -> list[Path]:
    """Draw the accuracy and learning-rate plots of a ``compare`` result."""
    accuracy = _per_round(data["runs"], "accuracy")
    target, _ = compare_metrics(data)
    families = {
        "baselines": [n for n in accuracy if n in BASELINES],
        "FedHyper family (FedAvg for reference)": [REFERENCE]
        + [n for n in accuracy if n not in BASELINES],
    }
    figure, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for axis, (title, names) in zip(axes, families.items(), strict=True):
        for name in names:
            if name not in accuracy:
                continue
            values = accuracy[name]
            rounds = np.arange(1, values.shape[1] + 1)
            style = {"color": "black", "linestyle": "--"} if name == REFERENCE else {}
            (line,) = axis.plot(
                rounds, values.mean(axis=0), label=f"{name} (n={len(values)})", **style
            )
            axis.fill_between(
                rounds, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.15
            )
        axis.axhline(
            target, color="grey", linestyle=":", linewidth=1, label="target: FedAvg's final"
        )
        axis.set(xlabel="round", title=title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    axes[0].set_ylabel("centralised test accuracy (mean, band: min-max over seeds)")
    accuracy_path = _save(figure, data, stem, "accuracy")

    figure, axes = plt.subplots(1, 2, figsize=(13, 5))
    for axis, key, ylabel in (
        (axes[0], "global_lr_per_round", "global LR (GM, full, universal: 1 + acc)"),
        (axes[1], "local_lr_per_round", "mean client LR over local steps"),
    ):
        for name, values in _per_round(data["runs"], key).items():
            mean = np.nanmean(values, axis=0)
            if name != REFERENCE and np.allclose(mean, mean[0]):
                continue  # constant: shown by FedAvg's line
            axis.plot(np.arange(1, len(mean) + 1), mean, label=name)
        # Learning rates here move multiplicatively and span decades (a 10% drift of a
        # base LR beside a swing between bounds): a log axis shows both.
        axis.set(xlabel="round", ylabel=ylabel, yscale="log")
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    return [accuracy_path, _save(figure, data, stem, "lr")]


def plot_robustness(data: dict[str, Any], stem: Path) -> list[Path]:
    """Draw FedAvg's accuracy and each arm's regret against tuned FedAvg as heatmaps."""
    local_lrs, global_lrs, by_arm = grids(data)
    tuned, _ = tuned_reference(by_arm)
    panels: list[tuple[str, np.ndarray, str, bool]] = [
        (f"{REFERENCE}: final accuracy (%)", 100 * by_arm[REFERENCE], "viridis", False)
    ]
    for arm, grid in by_arm.items():
        panels.append(
            (f"{arm}: regret vs tuned fedavg (points)", 100 * (tuned - grid), "RdBu_r", True)
        )
    figure, axes = plt.subplots(
        1,
        len(panels),
        figsize=(4.6 * len(panels), 1.2 + 0.75 * len(local_lrs) + 1.5),
        squeeze=False,
    )
    for axis, (title, grid, cmap, centred) in zip(axes[0], panels, strict=True):
        limit = max(float(np.nanmax(np.abs(grid))), 1.0) if centred else None
        image = axis.imshow(
            grid,
            cmap=cmap,
            aspect="auto",
            origin="lower",
            vmin=-limit if limit else None,
            vmax=limit,
        )
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                if not np.isnan(grid[i, j]):
                    axis.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8)
        axis.set_xticks(range(len(global_lrs)), [f"{g:g}" for g in global_lrs])
        axis.set_yticks(range(len(local_lrs)), [f"{v:g}" for v in local_lrs])
        axis.set(xlabel="initial global LR α_0", ylabel="initial local LR η_0", title=title)
        figure.colorbar(image, ax=axis, fraction=0.046)
    return [_save(figure, data, stem, "heatmap")]


def plot_ablation(data: dict[str, Any], stem: Path) -> list[Path]:
    """Draw each arm's final accuracy per cell of an ``ablation`` result as bars."""
    cells = ablation_cells(data)
    arms = max(len(cell.arms) for cell in cells)
    figure, axes = plt.subplots(
        1, len(cells), figsize=(7 * len(cells), 1.5 + 0.3 * arms), squeeze=False
    )
    for axis, cell in zip(axes[0], cells, strict=True):
        names = [arm.metrics.strategy for arm in cell.arms]
        means = [100 * arm.metrics.final_mean for arm in cell.arms]
        spreads = [100 * arm.metrics.final_std for arm in cell.arms]
        colours = [
            "tab:orange" if name == FULL_RULE else "grey" if name in BASELINES else "tab:blue"
            for name in names
        ]
        axis.barh(names, means, xerr=spreads, color=colours)
        if cell.target is not None:
            axis.axvline(
                100 * cell.target, color="black", linestyle="--", linewidth=1, label="FedAvg"
            )
            axis.legend(fontsize=7)
        # Arms differ by a few points at 60-85% accuracy: start the axis near the
        # lowest bar so those differences are visible.
        axis.set_xlim(max(0.0, min(means) - 5), min(100.0, max(means) + 3))
        axis.invert_yaxis()
        axis.tick_params(axis="y", labelsize=7)
        axis.set(
            xlabel="final accuracy (%), ± std over seeds",
            title=f"η_0 = {cell.local_lr:g}, α_0 = {cell.global_lr:g}",
        )
        axis.grid(alpha=0.3, axis="x")
    return [_save(figure, data, stem, "bars")]
