"""Compare the runs of a sweep: a table of headline figures and a plot per round.

``python -m benchmarks.compare <sweep dir>`` reads every run directory below it (each
with ``summary.json`` and ``history.jsonl``), prints the table, writes
``comparison.md`` and ``comparison.png`` beside the runs, and prints their paths.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fedhyper.history import SUMMARY_FILE, RunSummary, read_history


@dataclass(frozen=True)
class Run:
    """One finished run: its directory, summary and per-round history."""

    path: Path
    summary: RunSummary
    history: list[dict[str, Any]]


def find_runs(sweep_dir: Path) -> list[Run]:
    """Load every finished run under ``sweep_dir``, in directory order.

    Parameters
    ----------
    sweep_dir : Path
        A Hydra sweep directory (or any parent of run directories).

    Returns
    -------
    list of Run
        The runs that wrote a summary.

    """
    return [
        Run(path.parent, RunSummary.load(path.parent), read_history(path.parent))
        for path in sorted(sweep_dir.rglob(SUMMARY_FILE))
    ]


def markdown_table(runs: list[Run]) -> str:
    """Format the headline figures as a markdown table.

    Parameters
    ----------
    runs : list of Run
        Runs to compare.

    Returns
    -------
    str
        The table, one row per run.

    """
    target = runs[0].summary.target_accuracy
    lines = [
        f"| strategy | final accuracy | best accuracy | rounds to {target:.0%} | wall time (s) |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        s = run.summary
        reached = "not reached" if s.rounds_to_target is None else str(s.rounds_to_target)
        lines.append(
            f"| {s.strategy} | {s.final_accuracy:.4f} | {s.best_accuracy:.4f} | {reached} "
            f"| {s.wall_s:.0f} |"
        )
    return "\n".join(lines)


def plot(runs: list[Run], path: Path) -> None:
    """Plot centralised accuracy and global LR per round, one line per run.

    Parameters
    ----------
    runs : list of Run
        Runs to draw.
    path : Path
        PNG file to write.

    """
    figure, (accuracy_axis, lr_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        rounds = [row["round"] for row in run.history]
        label = run.summary.strategy
        accuracy_axis.plot(rounds, [row["accuracy"] for row in run.history], label=label)
        lr_axis.plot(rounds, [row["global_lr"] for row in run.history], label=label)
    accuracy_axis.set(xlabel="round", ylabel="centralised test accuracy", title="Accuracy")
    lr_axis.set(xlabel="round", ylabel="global learning rate α", title="Global LR")
    for axis in (accuracy_axis, lr_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    """Print the comparison of a sweep and write its table and plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="directory holding the runs")
    args = parser.parse_args(argv)
    runs = find_runs(args.sweep_dir)
    if not runs:
        parser.error(f"no finished runs (no {SUMMARY_FILE}) under {args.sweep_dir}")
    table = markdown_table(runs)
    table_path = args.sweep_dir / "comparison.md"
    plot_path = args.sweep_dir / "comparison.png"
    table_path.write_text(table + "\n", encoding="utf-8")
    plot(runs, plot_path)
    print(table)
    print(f"\ntable: {table_path}\nplot:  {plot_path}")
    for run in runs:
        print(f"run:   {run.path}  (config.yaml, history.jsonl, summary.json, model.pt)")


if __name__ == "__main__":
    main()
