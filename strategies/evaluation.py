"""Centralised evaluation: the global model on the held-out test set, after every round."""

from __future__ import annotations

from fedhyper.data.federated import test_data
from fedhyper.training import evaluate, flush_denormals, pick_device
from strategies.callbacks import RoundCallback, RunContext
from strategies.rounds import RoundRecord

__all__ = ["CentralEvaluation"]


class CentralEvaluation(RoundCallback):
    """Set the round's ``accuracy`` and ``loss`` on the centralised test set.

    The test set (``dataset.test_examples`` of it) is loaded once; the run's model is
    reused, loaded with each round's global weights.
    """

    def on_run_start(self, run: RunContext) -> None:
        """Load the test set."""
        self._dataset = test_data(run.config.dataset)
        flush_denormals(run.config.client.flush_denormals)
        self._device = pick_device("auto")

    def after_round(self, run: RunContext, record: RoundRecord) -> bool:
        """Evaluate the round's global model."""
        run.model.load_state_dict(record.arrays.to_torch_state_dict())
        result = evaluate(run.model, self._dataset, device=self._device)
        record.row.loss, record.row.accuracy = result.loss, result.accuracy
        return False
