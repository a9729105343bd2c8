"""Per-round history of a run (JSONL) and the summary figures derived from it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedhyper.atomic import atomic_write_text

HISTORY_FILE = "history.jsonl"
SUMMARY_FILE = "summary.json"


class HistoryWriter:
    """Append one JSON object per round to ``history.jsonl``, flushed at once.

    A crashed run keeps every completed round on disk.

    Parameters
    ----------
    run_dir : Path
        The run's output directory.
    rows : sequence of dict
        The rounds already run: none for a fresh run, a checkpoint's history when
        resuming. The file is rewritten with exactly these, dropping rows a killed run
        wrote after its last checkpoint (the resumed run computes them again).

    """

    def __init__(self, run_dir: Path, rows: Sequence[dict[str, Any]] = ()) -> None:
        self.path = run_dir / HISTORY_FILE
        self.rows: list[dict[str, Any]] = list(rows)
        atomic_write_text(self.path, "".join(json.dumps(row) + "\n" for row in self.rows))

    def append(self, row: dict[str, Any]) -> None:
        """Record one round."""
        self.rows.append(row)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """Load the rows a :class:`HistoryWriter` wrote.

    Parameters
    ----------
    run_dir : Path
        The run's output directory.

    Returns
    -------
    list of dict
        One row per round, in order.

    """
    lines = (run_dir / HISTORY_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@dataclass(frozen=True)
class RunSummary:
    """Headline figures of one run.

    Attributes
    ----------
    strategy : str
        Strategy name.
    final_accuracy : float
        Centralised test accuracy after the last round.
    best_accuracy : float
        Best centralised test accuracy over the rounds.
    rounds_to_target : int or None
        First round whose accuracy reached the target, ``None`` if none did.
    target_accuracy : float
        The target used.
    wall_s : float
        Wall time of the training rounds, start-up excluded.

    """

    strategy: str
    final_accuracy: float
    best_accuracy: float
    rounds_to_target: int | None
    target_accuracy: float
    wall_s: float

    def save(self, run_dir: Path) -> None:
        """Write ``summary.json``."""
        (run_dir / SUMMARY_FILE).write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, run_dir: Path) -> RunSummary:
        """Read ``summary.json``."""
        return cls(**json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8")))


def rounds_to_target(accuracies: Sequence[float], target: float) -> int | None:
    """Return the first 1-based round whose accuracy is at least ``target``, else ``None``."""
    return next((i + 1 for i, acc in enumerate(accuracies) if acc >= target), None)


def summarise(strategy: str, rows: Iterable[dict[str, Any]], target: float) -> RunSummary:
    """Derive the headline figures from a history.

    Parameters
    ----------
    strategy : str
        Strategy name.
    rows : iterable of dict
        Rows with ``accuracy`` and ``wall_s`` keys, one per round.
    target : float
        Accuracy for rounds-to-target.

    Returns
    -------
    RunSummary
        The figures.

    """
    rows = list(rows)
    accuracies = [float(row["accuracy"]) for row in rows]
    return RunSummary(
        strategy=strategy,
        final_accuracy=accuracies[-1],
        best_accuracy=max(accuracies),
        rounds_to_target=rounds_to_target(accuracies, target),
        target_accuracy=target,
        wall_s=float(rows[-1]["wall_s"]),
    )
