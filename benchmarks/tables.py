"""Markdown tables of the benchmark result files, a pure function of the JSON.

:func:`table` renders the ``<stem>.md`` file of one result: its setup and provenance,
then for ``compare`` one row per strategy (aggregated over seeds) with the headline
metrics of :mod:`benchmarks.metrics` (final accuracy, rounds to FedAvg's final accuracy,
speed-up over FedAvg) and the rounds to the preset's absolute target as a secondary
column; for ``robustness`` each arm's final-accuracy grid over (initial local LR,
initial global LR) and its regret against the best-tuned FedAvg; for ``ablation`` the
full rule against each variant (:mod:`benchmarks.ablations`). :func:`summary` renders
the headline tables of the results index. ``tests/benchmarks/test_results.py`` checks that
the committed tables are reproduced byte for byte.
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

from benchmarks.ablations import FULL_RULE, ablation_summary_cells, ablation_table
from benchmarks.metrics import (
    REFERENCE,
    Regret,
    StrategyMetrics,
    fastest,
    final_accuracy,
    mean_final_accuracy,
    most_accurate,
    regret,
    seed_rounds,
    speedup,
    strategy_metrics,
)
from fedhyper.methods import baselines

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SUITE_NAMES = ("compare", "robustness", "tuning", "ablation", "hdet")
REGRET_SUITES = ("robustness", "tuning")
"""Suites whose result is a grid over initial learning rates, one arm per method, each
summarised by its regret against the best-tuned FedAvg; an ``ablation`` (also over
initial LRs) is summarised against its full rule instead (:mod:`benchmarks.ablations`)."""

BASELINES = baselines()
"""Strategies that are not FedHyper: the baselines FedHyper is compared with."""

FULL = "fedhyper"


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


def shared_lr(data: dict[str, Any]) -> float | None:
    """Return the initial client LR of a result's runs if they all share one, else ``None``."""
    lrs = {float(run["local_lr"]) for run in data["runs"]}
    return lrs.pop() if len(lrs) == 1 else None


def client_label(data: dict[str, Any]) -> str:
    """Name a result's client optimiser, with its LR when every run shares one.

    ``"sgd, LR 0.01"`` for a ``compare`` result; ``"sgd"`` for a ``robustness`` grid,
    whose runs span several initial local LRs.
    """
    optimizer = str(data["setup"]["optimizer"])
    lr = shared_lr(data)
    return optimizer if lr is None else f"{optimizer}, LR {lr:g}"


def _by_strategy(runs: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[run["strategy"]].append(run)
    return dict(groups)


# ----------------------------------------------------------------------------- compare


def compare_metrics(data: dict[str, Any]) -> tuple[float, list[StrategyMetrics]]:
    """Return the target (FedAvg's final accuracy) and every strategy's headline figures.

    Parameters
    ----------
    data : dict
        A ``compare`` result.

    Returns
    -------
    target : float
        FedAvg's final accuracy, averaged over its seeds.
    metrics : list of StrategyMetrics
        One per strategy, in first-appearance order.

    Raises
    ------
    ValueError
        If the result has no FedAvg run to set the target.

    """
    curves = {
        name: [run["accuracy"] for run in group]
        for name, group in _by_strategy(data["runs"]).items()
    }
    if REFERENCE not in curves:
        raise ValueError(f"compare on {data['dataset']}: no {REFERENCE} run sets the target")
    target = mean_final_accuracy(curves[REFERENCE])
    return target, strategy_metrics(curves, target)


def _named_final(m: StrategyMetrics | None, *, named: bool = True) -> str:
    """``"0.834 ± 0.011 `fedhyper`"``: the final accuracy, then (if ``named``) the label."""
    if m is None:
        return "—"
    return m.final_text(".3f") + (f" `{m.strategy}`" if named else "")


def _speedup_cell(
    reference: StrategyMetrics | None, candidate: StrategyMetrics | None, *, named: bool = False
) -> str:
    """``"1.62x (7.7 vs 12.3)"``: the speed-up, then the candidate's and reference's rounds.

    With ``named``, the reference's label follows as ``, `name` ``.
    """
    if reference is None or candidate is None:
        return "—"
    ratio = speedup(reference.rounds, candidate.rounds)
    if ratio is None:
        missed = dict.fromkeys(m for m in (candidate, reference) if m.rounds.mean is None)
        return "n/a (" + ", ".join(f"`{m.strategy}` {m.rounds}" for m in missed) + ")"
    name = f", `{reference.strategy}`" if named else ""
    return f"{ratio:.2f}x ({candidate.rounds} vs {reference.rounds}){name}"


@dataclass(frozen=True)
class Contenders:
    """The strategies a ``compare`` result's headline compares.

    "Fastest" is :func:`benchmarks.metrics.fastest` (fewest rounds to FedAvg's final
    accuracy), "most accurate" is :func:`benchmarks.metrics.most_accurate`; a variant is
    any strategy that is not in :data:`BASELINES`. ``None`` where no such strategy ran.
    """

    fedavg: StrategyMetrics | None
    fastest_baseline: StrategyMetrics | None
    fastest_variant: StrategyMetrics | None
    accurate_baseline: StrategyMetrics | None
    accurate_variant: StrategyMetrics | None


def contenders(metrics: Sequence[StrategyMetrics]) -> Contenders:
    """Pick FedAvg, and the fastest and the most accurate baseline and FedHyper variant."""
    baseline_metrics = [m for m in metrics if m.strategy in BASELINES]
    variants = [m for m in metrics if m.strategy not in BASELINES]
    return Contenders(
        fedavg=next((m for m in metrics if m.strategy == REFERENCE), None),
        fastest_baseline=fastest(baseline_metrics),
        fastest_variant=fastest(variants),
        accurate_baseline=most_accurate(baseline_metrics),
        accurate_variant=most_accurate(variants),
    )


def headline(metrics: Sequence[StrategyMetrics]) -> list[str]:
    """Return FedHyper against FedAvg and the best baselines, one markdown bullet each.

    Parameters
    ----------
    metrics : sequence of StrategyMetrics
        The strategies of one ``compare`` result.

    Returns
    -------
    list of str
        FedHyper (full) and the fastest FedHyper variant, each against FedAvg and against
        the fastest baseline, and the most accurate variant against the most accurate
        baseline: speed-up and final accuracy.

    """
    picked = contenders(metrics)
    full = next((m for m in metrics if m.strategy == FULL), None)
    lines = []
    for title, candidate, against_title, against in (
        ("FedHyper (full)", full, "FedAvg", picked.fedavg),
        ("FedHyper (full)", full, "fastest baseline", picked.fastest_baseline),
        ("fastest FedHyper variant", picked.fastest_variant, "FedAvg", picked.fedavg),
        (
            "fastest FedHyper variant",
            picked.fastest_variant,
            "fastest baseline",
            picked.fastest_baseline,
        ),
        (
            "most accurate FedHyper variant",
            picked.accurate_variant,
            "most accurate baseline",
            picked.accurate_baseline,
        ),
    ):
        if candidate is None or against is None:
            continue
        points = 100 * (candidate.final_mean - against.final_mean)
        lines.append(
            f"- {title} `{candidate.strategy}` vs {against_title} `{against.strategy}`: "
            f"speed-up {_speedup_cell(against, candidate)}; final accuracy "
            f"{candidate.final_mean:.4f} vs {against.final_mean:.4f} ({points:+.1f} points)"
        )
    return lines


def compare_table(data: dict[str, Any]) -> str:
    """Format a ``compare`` result: one row per strategy, then the headline comparisons."""
    target, metrics = compare_metrics(data)
    reference = next(m for m in metrics if m.strategy == REFERENCE)
    absolute = data["setup"]["target_accuracy"]
    groups = _by_strategy(data["runs"])
    lines = [
        f"| strategy | seeds | final accuracy | rounds to FedAvg's final ({target:.4f}) "
        f"| speed-up vs FedAvg | best accuracy | rounds to {absolute:.0%} "
        "| wall time per run (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in metrics:
        runs = groups[m.strategy]
        ratio = speedup(reference.rounds, m.rounds)
        absolute_rounds = seed_rounds([run["accuracy"] for run in runs], absolute)
        lines.append(
            f"| {m.strategy} | {m.rounds.seeds} | {m.final_text()} | {m.rounds} "
            f"| {'—' if ratio is None else f'{ratio:.2f}x'} "
            f"| {statistics.fmean(max(run['accuracy']) for run in runs):.4f} "
            f"| {absolute_rounds} | {statistics.fmean(run['wall_s'] for run in runs):.0f} |"
        )
    legend = (
        "Final accuracy: mean of the last 3 rounds, then mean (± population std) over seeds. "
        "Rounds to FedAvg's final: the first round at or above FedAvg's final accuracy, mean "
        'over seeds ("missed k/n": k of n seeds never got there). Speed-up: FedAvg\'s '
        "rounds divided by this strategy's (> 1: fewer rounds than FedAvg). Best accuracy: "
        "the best round, mean over seeds. Rounds to the preset's absolute target: "
        "secondary. Wall time: training rounds only."
    )
    return "\n".join([*lines, "", legend, "", *headline(metrics)])


# ----------------------------------------------------------------------------- robustness


def cell_finals(
    data: dict[str, Any],
) -> tuple[list[float], list[float], dict[str, dict[tuple[int, int], list[float]]]]:
    """Collect each arm's final accuracies per (local LR row, global LR column) cell.

    Parameters
    ----------
    data : dict
        A grid result (``robustness``, ``tuning`` or ``ablation``).

    Returns
    -------
    local_lrs, global_lrs : list of float
        The rows and columns, ascending.
    cells : dict
        Arm label -> (row, column) -> the final accuracy (mean of the last 3 rounds) of
        each seed that ran there.

    """
    local_lrs = sorted({run["local_lr"] for run in data["runs"]})
    global_lrs = sorted({run["global_lr"] for run in data["runs"]})
    cells: dict[str, dict[tuple[int, int], list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in data["runs"]:
        key = (local_lrs.index(run["local_lr"]), global_lrs.index(run["global_lr"]))
        cells[run["strategy"]][key].append(final_accuracy(run["accuracy"]))
    return local_lrs, global_lrs, cells


def grids(data: dict[str, Any]) -> tuple[list[float], list[float], dict[str, np.ndarray]]:
    """Arrange final accuracies by arm on the grid of :func:`cell_finals`.

    Returns the rows and columns of :func:`cell_finals` and, per arm label, an array of
    each cell's final accuracy averaged over its seeds (NaN where the cell did not run).
    """
    local_lrs, global_lrs, cells = cell_finals(data)
    return local_lrs, global_lrs, _mean_grids(local_lrs, global_lrs, cells)


def _mean_grids(
    local_lrs: list[float],
    global_lrs: list[float],
    cells: dict[str, dict[tuple[int, int], list[float]]],
) -> dict[str, np.ndarray]:
    by_arm = {}
    for arm, values in cells.items():
        grid = np.full((len(local_lrs), len(global_lrs)), np.nan)
        for (i, j), finals in values.items():
            grid[i, j] = statistics.fmean(finals)
        by_arm[arm] = grid
    return by_arm


def tuned_reference(by_arm: dict[str, np.ndarray]) -> tuple[float, tuple[int, int]]:
    """Return the best FedAvg cell's final accuracy and its (row, column)."""
    grid = by_arm[REFERENCE]
    i, j = np.unravel_index(np.nanargmax(grid), grid.shape)
    return float(grid[i, j]), (int(i), int(j))


def regrets(data: dict[str, Any]) -> dict[str, Regret]:
    """Return each arm's regret against the best-tuned FedAvg, FedAvg's own included."""
    _, _, by_arm = grids(data)
    tuned, _ = tuned_reference(by_arm)
    return {arm: regret(grid.tolist(), tuned) for arm, grid in by_arm.items()}


def gains(data: dict[str, Any]) -> dict[str, np.ndarray]:
    """Return each arm's final-accuracy gain over FedAvg in the same cell, in points."""
    _, _, by_arm = grids(data)
    reference = by_arm[REFERENCE]
    return {arm: 100 * (grid - reference) for arm, grid in by_arm.items() if arm != REFERENCE}


def _cell(local_lrs: list[float], global_lrs: list[float], cell: tuple[int, int]) -> str:
    i, j = cell
    return f"α_0 = {global_lrs[j]:g}, η_0 = {local_lrs[i]:g}"


def _seed_cell(finals: list[float] | None) -> str:
    """One grid cell: the final accuracy, or mean ± population std (seeds) over seeds."""
    if not finals:
        return "—"
    if len(finals) == 1:
        return f"{finals[0]:.4f}"
    return f"{statistics.fmean(finals):.4f} ± {statistics.pstdev(finals):.4f} ({len(finals)})"


def _grid_table(
    title: str,
    local_lrs: list[float],
    global_lrs: list[float],
    finals: dict[tuple[int, int], list[float]],
) -> list[str]:
    lines = [
        f"**{title}** (rows: initial local LR η_0; columns: initial global LR α_0)",
        "",
        "| η_0 \\ α_0 | " + " | ".join(f"{g:g}" for g in global_lrs) + " |",
        "|---" * (len(global_lrs) + 1) + "|",
    ]
    for i, local_lr in enumerate(local_lrs):
        cells = [_seed_cell(finals.get((i, j))) for j in range(len(global_lrs))]
        lines.append(f"| {local_lr:g} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _regret_cells(local_lrs: list[float], global_lrs: list[float], r: Regret) -> list[str]:
    return [
        f"{r.worst:.1f} ({_cell(local_lrs, global_lrs, r.worst_cell)})",
        f"{r.median:.1f}",
        f"{r.within}/{r.cells}",
    ]


def robustness_table(data: dict[str, Any]) -> str:
    """Format a ``robustness`` result: each arm's accuracy grid, then its regret."""
    local_lrs, global_lrs, finals = cell_finals(data)
    tuned, cell = tuned_reference(_mean_grids(local_lrs, global_lrs, finals))
    lines: list[str] = []
    for arm, arm_finals in finals.items():
        lines += _grid_table(f"{arm}: final accuracy", local_lrs, global_lrs, arm_finals)
    same_cell = gains(data)
    lines += [
        f"**Regret against tuned FedAvg** (its best cell: {tuned:.4f} at "
        f"{_cell(local_lrs, global_lrs, cell)}), in accuracy points",
        "",
        "| arm | worst cell | median | cells within 1 point | gain over FedAvg in the same "
        "cell: mean (smallest, largest) |",
        "|---|---|---|---|---|",
    ]
    for arm, r in regrets(data).items():
        gain = same_cell.get(arm)
        finite = None if gain is None else gain[~np.isnan(gain)]
        spread = (
            "—"
            if finite is None or finite.size == 0
            else f"{finite.mean():+.1f} ({finite.min():+.1f}, {finite.max():+.1f})"
        )
        lines.append(
            f"| {arm} | " + " | ".join([*_regret_cells(local_lrs, global_lrs, r), spread]) + " |"
        )
    lines += [
        "",
        "Final accuracy: mean of the last 3 rounds; where a cell ran several seeds, mean ± "
        "population std over them (the number of seeds in brackets), as in `compare`. "
        "Regret in a cell: the best FedAvg cell's final accuracy minus the arm's, in points "
        "(what a user loses by not tuning FedAvg); worst cell, median over the cells that "
        "ran, and how many are within 1 point.",
    ]
    return "\n".join(lines)


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
    shared = shared_lr(data)
    lr = "" if shared is None else f" at LR {shared:g}"
    mean = "weighted by examples" if s["weighted"] else "unweighted mean"
    return (
        f"{model}; {s['num_clients']} clients ({partition}), {s['clients_per_round']} a round; "
        f"{s['optimizer']}{momentum}{lr}, {s['local_epochs']} local epoch(s), batch "
        f"{s['batch_size']}{steps}; {s['num_rounds']} rounds; accuracy on {test}; "
        f"aggregation {mean}; absolute target accuracy {s['target_accuracy']:.0%}."
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
    if data["suite"] == "ablation":
        body = ablation_table(data)
    elif data["suite"] in REGRET_SUITES:
        body = robustness_table(data)
    else:
        body = compare_table(data)
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
        *_addition_lines(data),
        *(
            []
            if data.get("finished", True)
            else [
                _interrupted_line(data),
                "",
            ]
        ),
        body,
    ]
    return "\n".join(lines) + "\n"


def _interrupted_line(data: dict[str, Any]) -> str:
    """Say how many runs the stopped sweep finished, and that additions count apart."""
    own = sum("addition" not in run for run in data["runs"])
    line = f"**Interrupted:** the suite was stopped after {own} finished runs"
    if own == len(data["runs"]):
        return line + "; the rows below are those runs only."
    return line + "; the rows below are those and the added runs named above."


def _addition_lines(data: dict[str, Any]) -> list[str]:
    """Name each sweep joined to the file later, with how many of the runs it made."""
    additions = data.get("additions", [])
    counts = [sum(run.get("addition") == k for run in data["runs"]) for k in range(len(additions))]
    return [
        *(
            f"Added ({_runs_left(count)}): `{sweep['command']}`, "
            f"{sweep['machine']}, {sweep['date']}  "
            for sweep, count in zip(additions, counts, strict=True)
        ),
        *([""] if additions else []),
    ]


def _runs_left(count: int) -> str:
    if count == 0:
        return "no run left: a later addition replaced them"
    return f"{count} run{'' if count == 1 else 's'}"


# ----------------------------------------------------------------------------- summary


def _provenance_cells(data: dict[str, Any]) -> list[str]:
    wall = data.get("suite_wall_s")
    dates = [data["date"][:10], *(sweep["date"][:10] for sweep in data.get("additions", []))]
    return ["—" if wall is None else f"{wall / 60:.0f} min", ", ".join(dict.fromkeys(dates))]


def compare_summary_row(data: dict[str, Any]) -> str:
    """One markdown row of the headline comparison for a ``compare`` result.

    Parameters
    ----------
    data : dict
        A ``compare`` result file's content.

    Returns
    -------
    str
        Dataset, profile, client optimiser and LR, seeds; FedAvg's final accuracy (the
        target) and its rounds to it; the fastest FedHyper variant, its speed-up against
        FedAvg and against the fastest baseline, and its final accuracy; the most
        accurate FedHyper variant and baseline with their final accuracies; the suite's
        wall time and date.

    """
    _, metrics = compare_metrics(data)
    picked = contenders(metrics)
    reference, variant = picked.fedavg, picked.fastest_variant
    cells = [
        data["dataset"],
        data["profile"],
        client_label(data),
        str(max(m.rounds.seeds for m in metrics)),
        _named_final(reference, named=False),
        "—" if reference is None else str(reference.rounds),
        "—" if variant is None else f"`{variant.strategy}`",
        _speedup_cell(reference, variant),
        _speedup_cell(picked.fastest_baseline, variant, named=True),
        _named_final(variant, named=False),
        _named_final(picked.accurate_variant),
        _named_final(picked.accurate_baseline),
        *_provenance_cells(data),
    ]
    return "| " + " | ".join(cells) + " |"


def robustness_summary_rows(data: dict[str, Any]) -> list[str]:
    """Markdown rows of the regret against tuned FedAvg for a ``robustness`` result.

    Parameters
    ----------
    data : dict
        A ``robustness`` result file's content.

    Returns
    -------
    list of str
        One row per arm, FedAvg's own included: the cells that ran, the best FedAvg
        cell, the worst regret and its cell, the median regret, the cells within one
        point, and the suite's wall time and date.

    """
    local_lrs, global_lrs, by_arm = grids(data)
    tuned, cell = tuned_reference(by_arm)
    head = [data["dataset"], data["profile"], client_label(data)]
    tuned_cell = f"{tuned:.3f} ({_cell(local_lrs, global_lrs, cell)})"
    return [
        "| "
        + " | ".join(
            [
                *head,
                f"`{arm}`",
                tuned_cell,
                *_regret_cells(local_lrs, global_lrs, r),
                *_provenance_cells(data),
            ]
        )
        + " |"
        for arm, r in regrets(data).items()
    ]


def summary(results: Sequence[dict[str, Any]]) -> str:
    """Render the headline figures of every result as two markdown tables.

    Parameters
    ----------
    results : sequence of dict
        Result files' contents, in the order to list them.

    Returns
    -------
    str
        A ``compare`` table (one row per dataset and client optimiser: speed-up to
        FedAvg's final accuracy and final accuracies), a ``robustness`` table (each
        arm's regret against the best-tuned FedAvg, ``tuning`` included) and an
        ``ablation`` table (per cell, the variants furthest below and above the full
        rule).

    """
    lines = [
        "| dataset | profile | client | seeds | FedAvg final accuracy (target) "
        "| FedAvg rounds to target | fastest FedHyper variant | its speed-up vs FedAvg "
        "| its speed-up vs the fastest baseline | its final accuracy "
        "| most accurate FedHyper variant | most accurate baseline | suite wall time | date |",
        "|---" * 14 + "|",
        *(compare_summary_row(d) for d in results if d["suite"] == "compare"),
        "",
        "Final accuracy: mean of the last 3 rounds, mean ± population std over seeds. "
        "Target: FedAvg's final accuracy. Rounds to target: the first round at or above "
        'it, mean over seeds ("missed k/n": k of n seeds never got there). Speed-up: the '
        "other strategy's rounds divided by the FedHyper variant's (> 1: the variant is "
        "faster), both in brackets. Fastest: fewest rounds to target, ties broken by the "
        "higher final accuracy. Most accurate: highest final accuracy. Baselines: "
        + ", ".join(f"`{name}`" for name in BASELINES)
        + "; every other strategy is a FedHyper variant.",
        "",
        "| dataset | profile | client | arm | tuned FedAvg (best cell) "
        "| worst regret, points (cell) | median regret | cells within 1 point "
        "| suite wall time | date |",
        "|---" * 10 + "|",
    ]
    for data in results:
        if data["suite"] in REGRET_SUITES:
            lines += robustness_summary_rows(data)
    lines += [
        "",
        "Regret in a cell: the best FedAvg cell's final accuracy minus the arm's final "
        "accuracy there, in points: what a user loses by not tuning FedAvg.",
        "",
        "| dataset | profile | client | cell | seeds | FedAvg final accuracy "
        f"| `{FULL_RULE}` final accuracy | variants | furthest below `{FULL_RULE}`, points "
        "| furthest above, points | suite wall time | date |",
        "|---" * 12 + "|",
    ]
    for data in results:
        if data["suite"] == "ablation":
            head = [data["dataset"], data["profile"], data["setup"]["optimizer"]]
            lines += [
                "| " + " | ".join([*head, *cells, *_provenance_cells(data)]) + " |"
                for cells in ablation_summary_cells(data)
            ]
    lines += [
        "",
        f"Ablations: the full rule (`{FULL_RULE}`) against its variants, each of which "
        "switches one ingredient off or replaces it, in the same cell (the baselines are "
        "not counted as variants); each file's table names what every variant changes.",
    ]
    return "\n".join(lines)
