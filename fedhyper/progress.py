"""Live round display: a rich progress bar on a terminal, one log line per round elsewhere."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

LOGGER = logging.getLogger("fedhyper")


def show_progress_lines() -> None:
    """Print FedHyper's INFO lines on stderr when nothing else handles them.

    Hydra configures the root logger itself; a ServerApp started by ``flwr run`` has no
    handler, and Flower forwards what the process writes to stderr to ``flwr log``.
    """
    if not LOGGER.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        LOGGER.addHandler(handler)
        LOGGER.setLevel(logging.INFO)


def describe_round(row: dict[str, Any]) -> str:
    """Format the figures of one round for people.

    Parameters
    ----------
    row : dict
        A history row.

    Returns
    -------
    str
        E.g. ``acc 0.812  loss 0.523  global lr 1.04  client lr 0.0100``.

    """
    return (
        f"acc {row['accuracy']:.3f}  loss {row['loss']:.3f}  "
        f"global lr {row['global_lr']:.3g}  client lr {row['client_lr_mean']:.3g}"
    )


class RoundProgress:
    """Context manager showing round k/N with the latest accuracy and learning rates.

    Parameters
    ----------
    title : str
        Shown before the bar, e.g. the strategy name.
    total_rounds : int
        N.
    enabled : bool
        ``False`` silences the display (the history is written regardless).

    """

    def __init__(self, title: str, total_rounds: int, *, enabled: bool = True) -> None:
        self.title = title
        self.total_rounds = total_rounds
        self.enabled = enabled
        console = Console(stderr=True)
        self._live = enabled and console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[figures]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not self._live,
        )
        self._task = self._progress.add_task(title, total=total_rounds, figures="")

    def __enter__(self) -> RoundProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def advance(self, row: dict[str, Any], completed: int) -> None:
        """Show the round just finished.

        Parameters
        ----------
        row : dict
            Its history row.
        completed : int
            Rounds completed so far.

        """
        figures = describe_round(row)
        self._progress.update(self._task, completed=completed, figures=figures)
        if self.enabled and not self._live:
            LOGGER.info("%s round %d/%d  %s", self.title, completed, self.total_rounds, figures)
