"""The callbacks that record a run: its clock, history file, W&B run, display, checkpoints."""

from __future__ import annotations

import time
from contextlib import ExitStack

from fedhyper.checkpoint import Checkpoint, capture_rng, save_checkpoint
from fedhyper.history import HistoryWriter
from fedhyper.progress import RoundProgress
from fedhyper.tracking import Tracker
from strategies.callbacks import RoundCallback, RunContext
from strategies.rounds import RoundRecord
from strategies.state import strategy_state

__all__ = ["Checkpoints", "HistoryFile", "ProgressDisplay", "RoundTimer", "WandbTracking"]


class RoundTimer(RoundCallback):
    """Set ``wall_s``: the run's wall time when the round's figures are complete.

    Resumed runs continue from their checkpoint's time; placed after the callbacks that
    measure, the time includes their work.
    """

    def on_run_start(self, run: RunContext) -> None:
        """Start the clock."""
        self._offset = float(run.history[-1]["wall_s"]) if run.history else 0.0
        self._start = time.perf_counter()

    def after_round(self, run: RunContext, record: RoundRecord) -> bool:
        """Stamp the round."""
        record.row.wall_s = self._offset + time.perf_counter() - self._start
        return False


class HistoryFile(RoundCallback):
    """Append each round's row to ``history.jsonl``, flushed at once."""

    def on_run_start(self, run: RunContext) -> None:
        """Rewrite the file with the rounds already run (none, or the checkpoint's)."""
        self._writer = HistoryWriter(run.run_dir, run.history)

    def after_round(self, run: RunContext, record: RoundRecord) -> bool:
        """Write the round's row."""
        self._writer.append(record.row.as_dict())
        return False


class WandbTracking(RoundCallback):
    """Mirror each round's row to W&B when ``logging.wandb`` is on."""

    def on_run_start(self, run: RunContext) -> None:
        """Open the W&B run."""
        self._tracker = Tracker(run.config, run.run_dir)

    def after_round(self, run: RunContext, record: RoundRecord) -> bool:
        """Log the round's row."""
        self._tracker.log(record.row.as_dict())
        return False

    def on_run_end(self, run: RunContext) -> None:
        """Close the W&B run."""
        self._tracker.finish()


class ProgressDisplay(RoundCallback):
    """Show round k/N with the latest figures (``logging.progress``)."""

    def on_run_start(self, run: RunContext) -> None:
        """Start the display."""
        config = run.config
        self._display = ExitStack()
        self._progress = self._display.enter_context(
            RoundProgress(config.strategy.name, config.num_rounds, enabled=config.logging.progress)
        )

    def after_round(self, run: RunContext, record: RoundRecord) -> bool:
        """Show the round."""
        self._progress.advance(record.row.as_dict(), record.row.round)
        return False

    def on_run_end(self, run: RunContext) -> None:
        """Stop the display."""
        self._display.close()


class Checkpoints(RoundCallback):
    """Save a checkpoint every ``reliability.checkpoint_every`` rounds and after the last.

    It holds everything a resumed run needs to continue bit for bit: the global model,
    the strategy's state, the client rules' state, the random generators and the history
    including this round.
    """

    def after_round(self, run: RunContext, record: RoundRecord) -> bool:
        """Save when the round is due."""
        every, server_round = run.config.reliability.checkpoint_every, record.row.round
        if every and (server_round % every == 0 or server_round == run.config.num_rounds):
            save_checkpoint(
                run.run_dir,
                Checkpoint(
                    server_round=server_round,
                    arrays=dict(record.arrays.to_torch_state_dict()),
                    strategy=strategy_state(run.strategy),
                    rng=capture_rng(),
                    history=[*run.history, record.row.as_dict()],
                    client_rule_states=record.client_rule_states,
                ),
            )
        return False
