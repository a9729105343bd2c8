"""The ``ablation`` suite's figures: the full rule against each arm, cell by cell.

An ``ablation`` result holds, in each cell (initial client LR η_0, initial global LR
α_0), the full rule (:data:`FULL_RULE`), arms that switch one of its ingredients off or
replace it, and baselines. Each arm is described by what it changes: its recorded
settings (``run["settings"]``, the Hydra ``strategy`` and ``client`` groups) against
the full rule's in the same cell, written as the overrides that would turn one into the
other. Its figures are the headline metrics of :mod:`benchmarks.metrics` with FedAvg's
final accuracy in the same cell as the target, and its difference from the full rule.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from benchmarks.metrics import (
    REFERENCE,
    StrategyMetrics,
    mean_final_accuracy,
    speedup,
    strategy_metrics,
)
from fedhyper.methods import baselines

FULL_RULE = "fedhyper_auto"
"""The arm every other arm of an ablation is compared with."""


@dataclass(frozen=True)
class ArmFigures:
    """One arm of an ablation cell.

    Attributes
    ----------
    metrics : StrategyMetrics
        Final accuracy over seeds and rounds to FedAvg's final accuracy in the cell.
    changes : tuple of str or None
        The overrides that turn the full rule into this arm (empty for the full rule
        itself); ``None`` where either's settings were not recorded.
    points_over_full : float or None
        Its final accuracy minus the full rule's, in points; ``None`` without a full rule.

    """

    metrics: StrategyMetrics
    changes: tuple[str, ...] | None
    points_over_full: float | None


@dataclass(frozen=True)
class AblationCell:
    """Every arm that ran in one (η_0, α_0) cell of an ablation result.

    Attributes
    ----------
    local_lr, global_lr : float
        The cell's initial client and global LR.
    target : float or None
        FedAvg's final accuracy there (mean over seeds); ``None`` without a FedAvg run.
    arms : list of ArmFigures
        In first-appearance order.

    """

    local_lr: float
    global_lr: float
    target: float | None
    arms: list[ArmFigures]

    def arm(self, name: str) -> ArmFigures | None:
        """Return the figures of the arm labelled ``name``, ``None`` if it did not run."""
        return next((a for a in self.arms if a.metrics.strategy == name), None)


def flatten(settings: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted.key, value)`` for every leaf of nested settings, in their order."""
    for key, value in settings.items():
        if isinstance(value, Mapping):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _override_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def setting_changes(settings: Mapping[str, Any], full: Mapping[str, Any]) -> tuple[str, ...]:
    """Return the overrides that turn the full rule's settings into an arm's.

    Parameters
    ----------
    settings : mapping
        The arm's recorded settings (``{"strategy": {...}, "client": {...}}``).
    full : mapping
        The full rule's, from the same cell.

    Returns
    -------
    tuple of str
        Every setting of the arm that the full rule lacks or sets otherwise, in the
        arm's own order (``("strategy.restart=false", ...)``; a change of method as
        ``strategy=<name>``), then ``~key`` for each setting only the full rule has,
        unless the method itself differs (whose settings are then the arm's alone).

    """
    arm_values, full_values = dict(flatten(settings)), dict(flatten(full))
    changed = [
        "strategy=" + str(value) if key == "strategy.name" else f"{key}={_override_value(value)}"
        for key, value in arm_values.items()
        if key not in full_values or full_values[key] != value
    ]
    if arm_values.get("strategy.name") != full_values.get("strategy.name"):
        return tuple(changed)
    return (*changed, *(f"~{key}" for key in full_values if key not in arm_values))


def ablation_cells(data: dict[str, Any]) -> list[AblationCell]:
    """Group an ablation result's runs by cell and compute each arm's figures.

    Parameters
    ----------
    data : dict
        An ``ablation`` result.

    Returns
    -------
    list of AblationCell
        One per (η_0, α_0) that ran, by ascending η_0 then α_0.

    """
    runs_by_cell: dict[tuple[float, float], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for run in data["runs"]:
        runs_by_cell[(run["local_lr"], run["global_lr"])][run["strategy"]].append(run)
    cells = []
    for (local_lr, global_lr), by_arm in sorted(runs_by_cell.items()):
        curves = {arm: [run["accuracy"] for run in runs] for arm, runs in by_arm.items()}
        target = mean_final_accuracy(curves[REFERENCE]) if REFERENCE in curves else None
        metrics = strategy_metrics(curves, math.inf if target is None else target)
        full = next((m for m in metrics if m.strategy == FULL_RULE), None)
        full_settings = by_arm[FULL_RULE][0].get("settings") if full else None
        arms = []
        for m in metrics:
            settings = by_arm[m.strategy][0].get("settings")
            arms.append(
                ArmFigures(
                    metrics=m,
                    changes=(
                        None
                        if settings is None or full_settings is None
                        else setting_changes(settings, full_settings)
                    ),
                    points_over_full=(
                        None if full is None else 100 * (m.final_mean - full.final_mean)
                    ),
                )
            )
        cells.append(AblationCell(local_lr, global_lr, target, arms))
    return cells


def _changes_cell(arm: ArmFigures) -> str:
    if arm.metrics.strategy == FULL_RULE:
        return "(the full rule)"
    if arm.changes is None:
        return "not recorded"
    return ", ".join(f"`{change}`" for change in arm.changes) or "nothing (same settings)"


def _rounds_cells(cell: AblationCell, arm: ArmFigures) -> list[str]:
    reference = cell.arm(REFERENCE)
    if cell.target is None or reference is None:
        return ["—", "—"]
    ratio = speedup(reference.metrics.rounds, arm.metrics.rounds)
    return [str(arm.metrics.rounds), "—" if ratio is None else f"{ratio:.2f}x"]


def ablation_table(data: dict[str, Any]) -> str:
    """Format an ``ablation`` result: per cell, one row per arm against the full rule."""
    lines: list[str] = []
    for cell in ablation_cells(data):
        target = "no FedAvg run" if cell.target is None else f"{cell.target:.4f}"
        lines += [
            f"**η_0 = {cell.local_lr:g}, α_0 = {cell.global_lr:g}** (FedAvg's final accuracy, "
            f"the target: {target})",
            "",
            f"| arm | what it changes from `{FULL_RULE}` | seeds | final accuracy "
            f"| vs `{FULL_RULE}`, points | rounds to FedAvg's final | speed-up vs FedAvg |",
            "|---|---|---|---|---|---|---|",
        ]
        for arm in cell.arms:
            m = arm.metrics
            points = "—" if arm.points_over_full is None else f"{arm.points_over_full:+.1f}"
            cells = [
                m.strategy,
                _changes_cell(arm),
                str(m.rounds.seeds),
                m.final_text(),
                points,
                *_rounds_cells(cell, arm),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(
        "Final accuracy: mean of the last 3 rounds, then mean (± population std) over "
        "seeds. What it changes: the arm's recorded settings against the full rule's, as "
        "Hydra overrides (`~key`: a setting the arm does not have). Rounds to FedAvg's "
        "final: the first round at or above FedAvg's "
        'final accuracy in the same cell, mean over seeds ("missed k/n": k of n seeds '
        "never got there); speed-up: FedAvg's rounds divided by the arm's."
    )
    return "\n".join(lines)


def ablation_summary_cells(data: dict[str, Any]) -> list[list[str]]:
    """Return the results index's cells for an ``ablation`` result, one list per cell.

    Parameters
    ----------
    data : dict
        An ``ablation`` result.

    Returns
    -------
    list of list of str
        Per cell: its η_0 and α_0, the seeds, FedAvg's and the full rule's final
        accuracy, how many variants ran (baselines and the full rule excluded), and the
        variants that end furthest below and furthest above the full rule, with the
        difference in points.

    """
    excluded = {*baselines(), FULL_RULE}
    rows = []
    for cell in ablation_cells(data):
        full, reference = cell.arm(FULL_RULE), cell.arm(REFERENCE)
        variants = [a for a in cell.arms if a.metrics.strategy not in excluded]
        scored = [a for a in variants if a.points_over_full is not None]
        rows.append(
            [
                f"η_0 = {cell.local_lr:g}, α_0 = {cell.global_lr:g}",
                str(max(a.metrics.rounds.seeds for a in cell.arms)),
                "—" if reference is None else reference.metrics.final_text(),
                "—" if full is None else full.metrics.final_text(),
                str(len(variants)),
                _extreme(min(scored, key=_points, default=None)),
                _extreme(max(scored, key=_points, default=None)),
            ]
        )
    return rows


def _points(arm: ArmFigures) -> float:
    return arm.points_over_full if arm.points_over_full is not None else 0.0


def _extreme(arm: ArmFigures | None) -> str:
    if arm is None or arm.points_over_full is None:
        return "—"
    return f"`{arm.metrics.strategy}` {arm.points_over_full:+.1f}"
