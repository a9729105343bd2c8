"""FedHyper's "universal" claim: the global-LR rule on top of another server optimiser."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedhyper.rules import UniversalGlobalLR
from fedhyper.wire import ARRAYS_RECORD, ServerStep
from strategies.delegating import DelegatingStrategy
from strategies.rule_strategy import trainable_delta


class UniversalStrategy(DelegatingStrategy):
    """Scale the round's update by the hypergradient factor before ``inner`` steps.

    Every client's weights ``w_i`` are replaced by ``w_t + s (w_i − w_t)``, with
    ``s = 1 + acc`` from :class:`~fedhyper.rules.UniversalGlobalLR` fed the unscaled
    average update. Averaging is linear, so ``inner`` (FedAdam, FedAvgM, FedExP, ...)
    sees exactly the aggregated update ``s Δ_t`` and takes its own step from it, with
    its own state untouched.

    Parameters
    ----------
    inner : FedAvg or DelegatingStrategy
        The server optimiser to wrap.
    rule : UniversalGlobalLR
        The global-LR rule.
    trainable_keys : sequence of str
        State-dict keys of the trainable floating-point parameters.

    """

    def __init__(
        self,
        inner: FedAvg | DelegatingStrategy,
        rule: UniversalGlobalLR,
        trainable_keys: Sequence[str],
    ) -> None:
        super().__init__(inner)
        self.rule = rule
        self.trainable_keys = list(trainable_keys)
        self._current: dict[str, torch.Tensor] | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember ``w_t``; ``inner`` samples and configures the round."""
        self._current = dict(arrays.to_torch_state_dict())
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Rescale the replies by the rule's factor, then let ``inner`` aggregate them."""
        replies = list(replies)
        valid = [reply for reply in replies if not reply.has_error()]
        current = self._current
        if not valid or current is None:
            return super().aggregate_train(server_round, replies)
        averaged = aggregate_arrayrecords([r.content for r in valid], self.weighted_by_key)
        step = self.rule.step(trainable_delta(averaged, current, self.trainable_keys))
        scale = step.global_lr
        for reply in valid:
            client = dict(reply.content.array_records[ARRAYS_RECORD].to_torch_state_dict())
            for key in self.trainable_keys:
                client[key] = current[key] + scale * (client[key] - current[key])
            reply.content[ARRAYS_RECORD] = ArrayRecord(client)
        arrays, metrics = super().aggregate_train(server_round, replies)
        metrics = metrics if metrics is not None else MetricRecord()
        # Replaces the inner rule's global LR and hypergradient (FedExP's step size).
        metrics.update(ServerStep(scale, step.hypergradient).to_record())
        return arrays, metrics

    def state_dict(self) -> dict[str, Any]:
        """Return the rule's state and the wrapped optimiser's."""
        return {**super().state_dict(), "rule": self.rule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        super().load_state_dict(state)
        self.rule.load_state_dict(state["rule"])
