"""Per-round history of a run (JSONL) and the summary figures derived from it."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from fedhyper.atomic import atomic_write_text

HISTORY_FILE = "history.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass(kw_only=True)
class RoundRow:
    """One round's figures: a line of ``history.jsonl``, its columns in this order.

    The round fills in what it measures; callbacks fill in the rest (the centralised
    ``accuracy`` and ``loss``, ``wall_s``) and may add columns of their own to ``extra``.

    Attributes
    ----------
    round : int
        The round, from 1.
    accuracy, loss : float
        The global model's on the centralised test set.
    train_loss : float
        The clients' mean training loss.
    federated_accuracy, federated_loss : float
        The global model's on the evaluating clients' validation splits (NaN when none
        replied).
    global_lr, hypergradient : float
        The server rule's step (1 and 0 without one).
    client_lr_mean, client_lr_min, client_lr_max : float
        Over the accepted clients' per-step learning rates: mean of their means, min of
        their minima, max of their maxima.
    scheduled_client_lr : float
        The learning rate the server set for the clients (NaN when it set none).
    probe_loss_ratio : float
        The clients' loss on their probe rows after training over the same before it,
        pooled over the clients (:func:`~fedhyper.rules.loss_guard.pooled_loss_ratio`;
        what FedHyper-Auto's loss guard reads; NaN when no client probed).
    step_loss_ratio : float
        The clients' pooled probe loss on the global model they received over the same
        on the previous round's (:attr:`~fedhyper.wire.TrainInstruction.probe_previous`):
        whether the server's last step went uphill; NaN when no client measured it
        (FedHyper-Auto without its global guard).
    clients_diverged : bool
        Whether the server rule read the round's clients as diverged (their pooled
        probe loss grew beyond FedHyper-Auto's ``divergence_ratio`` over their training)
        and stepped no further than their average.
    clients : int
        Replies aggregated.
    failures, timeouts, rejected, retries : int
        Replies lost to errors or timeouts, replies rejected by screening, and retried
        attempts, over the round's attempts.
    wall_s : float
        Wall time of the run when the round's figures were complete.
    extra : dict
        Further columns, written after these.

    """

    round: int
    accuracy: float = math.nan
    loss: float = math.nan
    train_loss: float
    federated_accuracy: float
    federated_loss: float
    global_lr: float
    hypergradient: float
    client_lr_mean: float
    client_lr_min: float
    client_lr_max: float
    scheduled_client_lr: float
    probe_loss_ratio: float = math.nan
    step_loss_ratio: float = math.nan
    clients_diverged: bool = False
    clients: int
    failures: int
    timeouts: int
    rejected: int
    retries: int
    wall_s: float = math.nan
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return the columns in order, ``extra`` last."""
        columns = {item.name: getattr(self, item.name) for item in fields(self)}
        del columns["extra"]
        return columns | self.extra


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
