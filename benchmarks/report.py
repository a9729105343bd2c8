"""Tables and plots of the benchmark result files, regenerated from the JSON alone.

``python -m benchmarks.report [FILE ...]`` rewrites, for every
``benchmarks/results/<suite>_<dataset>[_<profile>].json`` (or the files named), the
markdown table ``<stem>.md`` and the plots beside it, without training anything:

* ``compare``: ``<stem>_accuracy.png`` (mean accuracy per round with a min-max band over
  seeds) and ``<stem>_lr.png`` (global and mean local LR per round);
* ``robustness``: ``<stem>_heatmap.png`` (FedAvg's final accuracy and each arm's gain
  over it, per initial global LR x initial local LR cell).

The tables are a pure function of the JSON (``tests/test_benchmark_results.py`` checks
that the committed tables are reproduced byte for byte).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SUITE_NAMES = ("compare", "robustness")

BASELINES = (
    "fedavg",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    "fedexp",
    "decay_g",
    "decay_sl",
)
"""Strategies that are not FedHyper: the baselines FedHyper is compared with."""

FULL = "fedhyper"
REFERENCE = "fedavg"


# ----------------------------------------------------------------------------- loading


def result_files(results_dir: Path = RESULTS_DIR) -> list[Path]:
    """Return the suite result files of a results folder, sorted by name."""
    return sorted(
        path for path in results_dir.glob("*.json") if path.stem.split("_", 1)[0] in SUITE_NAMES
    )


def load(path: Path) -> dict[str, Any]:
    """Read one result file."""
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


# ----------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class StrategyStats:
    """One strategy's figures aggregated over its seeds.

    Attributes
    ----------
    strategy : str
        Label of the runs.
    seeds : int
        Number of runs.
    final_mean, final_std, best_mean : float
        Final accuracy (mean, population std) and best accuracy (mean) over seeds.
    reached : int
        Seeds that reached the target.
    rounds_mean : float or None
        Mean rounds-to-target over all seeds if every seed reached it, else ``None``.
    wall_mean : float
        Mean training wall time of a run.

    """

    strategy: str
    seeds: int
    final_mean: float
    final_std: float
    best_mean: float
    reached: int
    rounds_mean: float | None
    wall_mean: float


def strategy_stats(runs: Iterable[dict[str, Any]]) -> list[StrategyStats]:
    """Aggregate the runs of each strategy, in first-appearance order.

    Parameters
    ----------
    runs : iterable of dict
        Entries of a result file's ``runs``.

    Returns
    -------
    list of StrategyStats
        One per strategy label.

    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[run["strategy"]].append(run)
    stats = []
    for strategy, group in groups.items():
        finals = [run["final_accuracy"] for run in group]
        rounds = [run["rounds_to_target"] for run in group]
        reached = [r for r in rounds if r is not None]
        stats.append(
            StrategyStats(
                strategy=strategy,
                seeds=len(group),
                final_mean=statistics.fmean(finals),
                final_std=statistics.pstdev(finals),
                best_mean=statistics.fmean(run["best_accuracy"] for run in group),
                reached=len(reached),
                rounds_mean=statistics.fmean(reached) if len(reached) == len(rounds) else None,
                wall_mean=statistics.fmean(run["wall_s"] for run in group),
            )
        )
    return stats


def speedup(reference: StrategyStats | None, other: StrategyStats) -> float | None:
    """Rounds-to-target of ``reference`` over that of ``other`` (> 1: ``other`` is faster).

    ``None`` unless both reached the target on every seed.
    """
    if reference is None or reference.rounds_mean is None or other.rounds_mean is None:
        return None
    return reference.rounds_mean / other.rounds_mean


def best_of(stats: Sequence[StrategyStats], names: Iterable[str]) -> StrategyStats | None:
    """Return the strategy among ``names`` with the fewest rounds to target.

    Ties (and strategies that never reach it on every seed) are broken by the higher mean
    final accuracy; ``None`` if none of ``names`` ran.
    """
    wanted = set(names)
    candidates = [s for s in stats if s.strategy in wanted]
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda s: (s.rounds_mean is None, s.rounds_mean or 0.0, -s.final_mean),
    )


def headline(stats: Sequence[StrategyStats]) -> list[str]:
    """Return the rounds-to-target ratios of the paper's claim, one markdown bullet each.

    Parameters
    ----------
    stats : sequence of StrategyStats
        The aggregated strategies of one ``compare`` result.

    Returns
    -------
    list of str
        FedHyper (full) and the fastest FedHyper variant against FedAvg and against the
        fastest baseline.

    """
    by_name = {s.strategy: s for s in stats}
    reference = by_name.get(REFERENCE)
    best_baseline = best_of(stats, BASELINES)
    best_fedhyper = best_of(stats, [s.strategy for s in stats if s.strategy not in BASELINES])
    lines = []
    for title, candidate in (
        ("FedHyper (full)", by_name.get(FULL)),
        ("best FedHyper variant", best_fedhyper),
    ):
        if candidate is None:
            continue
        for against_title, against in (("FedAvg", reference), ("best baseline", best_baseline)):
            if against is None:
                continue
            ratio = speedup(against, candidate)
            figure = "n/a (target not reached on every seed)" if ratio is None else f"{ratio:.2f}x"
            lines.append(
                f"- {title} (`{candidate.strategy}`) vs {against_title} "
                f"(`{against.strategy}`): rounds-to-target ratio {figure}"
            )
    return lines


def _rounds_cell(s: StrategyStats) -> str:
    if s.rounds_mean is None:
        return "not reached" if s.reached == 0 else f"{s.reached}/{s.seeds} seeds"
    return f"{s.rounds_mean:.1f}"


def compare_table(data: dict[str, Any]) -> str:
    """Format a ``compare`` result: one row per strategy, then the headline ratios."""
    stats = strategy_stats(data["runs"])
    reference = next((s for s in stats if s.strategy == REFERENCE), None)
    target = data["setup"]["target_accuracy"]
    lines = [
        f"| strategy | seeds | final accuracy | best accuracy | rounds to {target:.0%} "
        "| rounds ratio vs FedAvg | wall time per run (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in stats:
        ratio = speedup(reference, s)
        spread = f" ± {s.final_std:.4f}" if s.seeds > 1 else ""
        lines.append(
            f"| {s.strategy} | {s.seeds} | {s.final_mean:.4f}{spread} "
            f"| {s.best_mean:.4f} | {_rounds_cell(s)} "
            f"| {'—' if ratio is None else f'{ratio:.2f}x'} | {s.wall_mean:.0f} |"
        )
    legend = (
        "Final and best accuracy: mean (± population std) over seeds. Rounds to target: "
        "the mean first round at or above it, if every seed reached it (else how many "
        "did). Rounds ratio vs FedAvg: FedAvg's mean rounds to target divided by this "
        "strategy's (> 1: fewer rounds than FedAvg). Wall time: training rounds only."
    )
    return "\n".join([*lines, "", legend, "", *headline(stats)])


# ----------------------------------------------------------------------------- robustness


def grids(data: dict[str, Any]) -> tuple[list[float], list[float], dict[str, np.ndarray]]:
    """Arrange final accuracies by arm on the (local LR row, global LR column) grid.

    Parameters
    ----------
    data : dict
        A ``robustness`` result (one seed, or the mean over seeds per cell).

    Returns
    -------
    local_lrs, global_lrs : list of float
        The rows and columns, ascending.
    by_arm : dict
        Arm label -> array of final accuracies, NaN where a cell did not run.

    """
    local_lrs = sorted({run["local_lr"] for run in data["runs"]})
    global_lrs = sorted({run["global_lr"] for run in data["runs"]})
    cells: dict[str, dict[tuple[int, int], list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in data["runs"]:
        key = (local_lrs.index(run["local_lr"]), global_lrs.index(run["global_lr"]))
        cells[run["strategy"]][key].append(run["final_accuracy"])
    by_arm = {}
    for arm, values in cells.items():
        grid = np.full((len(local_lrs), len(global_lrs)), np.nan)
        for (i, j), finals in values.items():
            grid[i, j] = statistics.fmean(finals)
        by_arm[arm] = grid
    return local_lrs, global_lrs, by_arm


def gains(data: dict[str, Any]) -> dict[str, np.ndarray]:
    """Return each arm's final-accuracy gain over FedAvg per cell, in points."""
    _, _, by_arm = grids(data)
    reference = by_arm[REFERENCE]
    return {arm: 100 * (grid - reference) for arm, grid in by_arm.items() if arm != REFERENCE}


def _grid_table(
    title: str, local_lrs: list[float], global_lrs: list[float], grid: np.ndarray, fmt: str
) -> list[str]:
    lines = [
        f"**{title}** (rows: initial local LR η_0; columns: initial global LR α_0)",
        "",
        "| η_0 \\ α_0 | " + " | ".join(f"{g:g}" for g in global_lrs) + " |",
        "|---" * (len(global_lrs) + 1) + "|",
    ]
    for i, local_lr in enumerate(local_lrs):
        cells = ["—" if np.isnan(v) else format(v, fmt) for v in grid[i]]
        lines.append(f"| {local_lr:g} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def robustness_table(data: dict[str, Any]) -> str:
    """Format a ``robustness`` result: the accuracy grid of each arm, then the gains."""
    local_lrs, global_lrs, by_arm = grids(data)
    lines: list[str] = []
    for arm, grid in by_arm.items():
        lines += _grid_table(f"{arm}: final accuracy", local_lrs, global_lrs, grid, ".4f")
    for arm, grid in gains(data).items():
        lines += _grid_table(
            f"{arm} − fedavg: gain in accuracy points", local_lrs, global_lrs, grid, "+.1f"
        )
        finite = grid[~np.isnan(grid)]
        i, j = np.unravel_index(np.nanargmax(grid), grid.shape)
        lines += [
            f"- {arm}: largest gain {finite.max():+.1f} points at α_0 = {global_lrs[j]:g}, "
            f"η_0 = {local_lrs[i]:g}; mean gain {finite.mean():+.1f} points over "
            f"{finite.size} cells; smallest {finite.min():+.1f}",
            "",
        ]
    return "\n".join(lines).rstrip("\n")


# ----------------------------------------------------------------------------- the table file


def describe_setup(data: dict[str, Any]) -> str:
    """One sentence with the shared setup of a result, reductions included."""
    s = data["setup"]
    model = s["model"] + (f" (hidden size {s['hidden_size']})" if s["model"] == "char_lstm" else "")
    partition = f"Dirichlet α = {s['alpha']:g}" if s["partition"] == "dirichlet" else s["partition"]
    steps = f", at most {s['max_steps']} local steps" if s["max_steps"] else ""
    test = (
        f"at most {s['test_examples']} test examples (a fixed random subset of a larger set)"
        if s["test_examples"]
        else "the full test set"
    )
    momentum = f" (momentum {s['momentum']:g})" if s["optimizer"] == "sgd" else ""
    mean = "weighted by examples" if s["weighted"] else "unweighted mean"
    return (
        f"{model}; {s['num_clients']} clients ({partition}), {s['clients_per_round']} a round; "
        f"{s['optimizer']}{momentum}, {s['local_epochs']} local epoch(s), batch "
        f"{s['batch_size']}{steps}; {s['num_rounds']} rounds; accuracy on {test}; "
        f"aggregation {mean}; target accuracy {s['target_accuracy']:.0%}."
    )


def table(data: dict[str, Any]) -> str:
    """Render the markdown table file of one result (a pure function of the JSON).

    Parameters
    ----------
    data : dict
        A result file's content.

    Returns
    -------
    str
        The file's text, ending in a newline.

    """
    body = compare_table(data) if data["suite"] == "compare" else robustness_table(data)
    wall = data.get("suite_wall_s")
    lines = [
        f"## `{data['suite']}` on {data['dataset']} (profile `{data['profile']}`)",
        "",
        f"Setup: {describe_setup(data)}",
        "",
        f"Command: `{data['command']}`  ",
        f"Machine: {data['machine']}  ",
        f"Date: {data['date']}"
        + ("" if wall is None else f"; suite wall time {wall / 60:.0f} min"),
        "",
        *(
            []
            if data.get("finished", True)
            else [
                f"**Interrupted:** the suite was stopped after {len(data['runs'])} finished "
                "runs; the rows below are those runs only.",
                "",
            ]
        ),
        body,
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots


def _stamp(figure: Any, data: dict[str, Any]) -> None:
    figure.suptitle(
        f"{data['suite']} · {data['dataset']} · profile {data['profile']} · {data['date']}\n"
        f"{data['machine']}",
        fontsize=8,
    )


def _per_round(runs: list[dict[str, Any]], key: str) -> dict[str, np.ndarray]:
    groups: dict[str, list[list[float]]] = defaultdict(list)
    for run in runs:
        groups[run["strategy"]].append(run[key])
    return {name: np.array(values, dtype=float) for name, values in groups.items()}


def plot_compare(data: dict[str, Any], stem: Path) -> list[Path]:
    """Draw the accuracy and learning-rate plots of a ``compare`` result."""
    accuracy = _per_round(data["runs"], "accuracy")
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
        axis.axhline(data["setup"]["target_accuracy"], color="grey", linestyle=":", linewidth=1)
        axis.set(xlabel="round", title=title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    axes[0].set_ylabel("centralised test accuracy (mean, band: min-max over seeds)")
    _stamp(figure, data)
    figure.tight_layout()
    accuracy_path = stem.with_name(stem.name + "_accuracy.png")
    figure.savefig(accuracy_path, dpi=110)
    plt.close(figure)

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
        axis.set(xlabel="round", ylabel=ylabel)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    _stamp(figure, data)
    figure.tight_layout()
    lr_path = stem.with_name(stem.name + "_lr.png")
    figure.savefig(lr_path, dpi=110)
    plt.close(figure)
    return [accuracy_path, lr_path]


def plot_robustness(data: dict[str, Any], stem: Path) -> list[Path]:
    """Draw FedAvg's accuracy and each arm's gain over it as heatmaps."""
    local_lrs, global_lrs, by_arm = grids(data)
    panels: list[tuple[str, np.ndarray, str, bool]] = [
        (f"{REFERENCE}: final accuracy (%)", 100 * by_arm[REFERENCE], "viridis", False)
    ]
    for arm, grid in gains(data).items():
        panels.append((f"{arm} − fedavg (points)", grid, "RdBu", True))
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
    _stamp(figure, data)
    figure.tight_layout()
    path = stem.with_name(stem.name + "_heatmap.png")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return [path]


def render(path: Path, data: dict[str, Any] | None = None) -> list[Path]:
    """Write the table and plots of one result file.

    Parameters
    ----------
    path : Path
        The result JSON.
    data : dict, optional
        Its content, if already loaded.

    Returns
    -------
    list of Path
        The files written.

    """
    data = load(path) if data is None else data
    stem = path.with_suffix("")
    table_path = path.with_suffix(".md")
    table_path.write_text(table(data), encoding="utf-8")
    plots = plot_compare(data, stem) if data["suite"] == "compare" else plot_robustness(data, stem)
    return [table_path, *plots]


def main(argv: list[str] | None = None) -> None:
    """Regenerate the tables and plots of the named (default: all) result files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="result files (default: all)")
    args = parser.parse_args(argv)
    for path in args.files or result_files():
        for written in render(path):
            print(f"wrote {written}")


if __name__ == "__main__":
    main()
