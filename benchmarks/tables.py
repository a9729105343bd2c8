"""Markdown tables of the benchmark result files, a pure function of the JSON.

:func:`table` renders the ``<stem>.md`` file of one result: its setup and provenance,
then for ``compare`` one row per strategy (aggregated over seeds) with the
rounds-to-target ratios of the paper's claim, and for ``robustness`` each arm's
final-accuracy grid and its gain over FedAvg per (initial global LR, initial local LR)
cell. ``tests/test_benchmark_results.py`` checks that the committed tables are
reproduced byte for byte.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedhyper.methods import baselines

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SUITE_NAMES = ("compare", "robustness")

BASELINES = baselines()
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


# ----------------------------------------------------------------------------- summary


def _ratio_cell(
    reference: StrategyStats | None, candidate: StrategyStats | None, *, name: str | None = None
) -> str:
    """``"0.94x (5.7 vs 5.3)"``: the ratio, then the candidate's and reference's rounds.

    ``name`` (a strategy label) is appended as ``, `name` `` when the ratio exists.
    """
    if reference is None or candidate is None:
        return "—"
    ratio = speedup(reference, candidate)
    if ratio is None:
        missed = dict.fromkeys(s.strategy for s in (candidate, reference) if s.rounds_mean is None)
        return "n/a (" + ", ".join(f"`{label}`" for label in missed) + " missed the target)"
    named = "" if name is None else f", `{name}`"
    return f"{ratio:.2f}x ({candidate.rounds_mean:.1f} vs {reference.rounds_mean:.1f}){named}"


def _provenance_cells(data: dict[str, Any]) -> list[str]:
    wall = data.get("suite_wall_s")
    return ["—" if wall is None else f"{wall / 60:.0f} min", data["date"][:10]]


def compare_summary_row(data: dict[str, Any]) -> str:
    """One markdown row of the paper's rounds claim for a ``compare`` result.

    Parameters
    ----------
    data : dict
        A ``compare`` result file's content.

    Returns
    -------
    str
        Dataset, profile, seeds and target; FedHyper (full) against FedAvg and against
        the fastest baseline; the fastest FedHyper variant against FedAvg; the best
        final accuracy and FedAvg's; the suite's wall time and date.

    """
    stats = strategy_stats(data["runs"])
    by_name = {s.strategy: s for s in stats}
    reference = by_name.get(REFERENCE)
    baseline = best_of(stats, BASELINES)
    variant = best_of(stats, [s.strategy for s in stats if s.strategy not in BASELINES])
    best_final = max(stats, key=lambda s: s.final_mean)
    cells = [
        data["dataset"],
        data["profile"],
        str(max(s.seeds for s in stats)),
        f"{data['setup']['target_accuracy']:.0%}",
        _ratio_cell(reference, by_name.get(FULL)),
        _ratio_cell(baseline, by_name.get(FULL), name=baseline.strategy if baseline else None),
        _ratio_cell(reference, variant, name=variant.strategy if variant else None),
        f"{best_final.final_mean:.3f} `{best_final.strategy}`",
        "—" if reference is None else f"{reference.final_mean:.3f}",
        *_provenance_cells(data),
    ]
    return "| " + " | ".join(cells) + " |"


def robustness_summary_rows(data: dict[str, Any]) -> list[str]:
    """Markdown rows of the gain claim for a ``robustness`` result, one per arm.

    Parameters
    ----------
    data : dict
        A ``robustness`` result file's content.

    Returns
    -------
    list of str
        Per arm: the largest gain over FedAvg in final accuracy (points) and its cell,
        the mean and the smallest gain over the cells that ran, FedAvg's range of final
        accuracies, and the suite's wall time and date.

    """
    local_lrs, global_lrs, by_arm = grids(data)
    reference = by_arm[REFERENCE]
    rows = []
    for arm, grid in gains(data).items():
        finite = grid[~np.isnan(grid)]
        i, j = np.unravel_index(np.nanargmax(grid), grid.shape)
        cells = [
            data["dataset"],
            data["profile"],
            f"`{arm}`",
            str(finite.size),
            f"{finite.max():+.1f} (α_0 = {global_lrs[j]:g}, η_0 = {local_lrs[i]:g})",
            f"{finite.mean():+.1f}",
            f"{finite.min():+.1f}",
            f"{np.nanmin(reference):.3f}–{np.nanmax(reference):.3f}",
            *_provenance_cells(data),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def summary(results: Sequence[dict[str, Any]]) -> str:
    """Render the headline figures of every result as two markdown tables.

    Parameters
    ----------
    results : sequence of dict
        Result files' contents, in the order to list them.

    Returns
    -------
    str
        A ``compare`` table (rounds-to-target ratios; > 1 means fewer rounds than the
        reference) and a ``robustness`` table (gains over FedAvg, in points).

    """
    lines = [
        "| dataset | profile | seeds | target | FedHyper (full) vs FedAvg "
        "| FedHyper (full) vs best baseline | best FedHyper variant vs FedAvg "
        "| best final accuracy | FedAvg final accuracy | suite wall time | date |",
        "|---" * 11 + "|",
        *(compare_summary_row(d) for d in results if d["suite"] == "compare"),
        "",
        "Rounds-to-target ratio: the reference's mean rounds to the target divided by the "
        "candidate's (> 1: the candidate needs fewer rounds), with both means in "
        "brackets; n/a when the candidate missed the target on some seed.",
        "",
        "| dataset | profile | arm | cells | largest gain over FedAvg (points) "
        "| mean gain | smallest gain | FedAvg final accuracy | suite wall time | date |",
        "|---" * 10 + "|",
    ]
    for data in results:
        if data["suite"] == "robustness":
            lines += robustness_summary_rows(data)
    return "\n".join(lines)
