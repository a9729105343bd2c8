"""A Flower strategy that hands the aggregated update to a pure server rule."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedhyper.rules import ServerRule


class RuleStrategy(FedAvg):
    """FedAvg's sampling and averaging, then a :class:`~fedhyper.rules.ServerRule` step.

    With ``Δ_t = average − w_t`` over the trainable floating-point parameters, the new
    global model is ``w_t + rule.step(Δ_t).update``; buffers (BatchNorm statistics,
    counters) take the plain average. When the rule schedules the clients' learning
    rate, it is written into the training config as ``lr`` and is the LR clients train
    with.

    Parameters
    ----------
    rule : ServerRule
        The learning-rate rule (its state is the strategy's state).
    trainable_keys : sequence of str
        State-dict keys of the trainable floating-point parameters, in model order.
    **fedavg_kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg`.

    """

    def __init__(self, rule: ServerRule, trainable_keys: Sequence[str], **fedavg_kwargs: Any):
        super().__init__(**fedavg_kwargs)
        self.rule = rule
        self.trainable_keys = list(trainable_keys)
        self.client_lr = rule.initial_client_lr()
        self._current: ArrayRecord | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the model sent out (``w_t``) and the LR clients must use."""
        self._current = arrays
        if self.client_lr is not None:
            config["lr"] = self.client_lr
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the replies, then move ``w_t`` by the rule's step."""
        averaged, metrics = super().aggregate_train(server_round, replies)
        if averaged is None or self._current is None:
            return averaged, metrics
        current = self._current.to_torch_state_dict()
        new_state = dict(averaged.to_torch_state_dict())
        delta = [new_state[key] - current[key] for key in self.trainable_keys]
        step = self.rule.step(delta)
        for key, update in zip(self.trainable_keys, step.update, strict=True):
            new_state[key] = current[key] + update
        # Flower's average promotes integer buffers to float; keep the model's dtypes.
        new_state = {key: value.to(current[key].dtype) for key, value in new_state.items()}
        if step.client_lr is not None:
            self.client_lr = step.client_lr
        metrics = metrics if metrics is not None else MetricRecord()
        metrics["global-lr"] = step.global_lr
        metrics["hypergradient"] = step.hypergradient
        return ArrayRecord(new_state), metrics

    def state_dict(self) -> dict[str, Any]:
        """Return the strategy's state: the rule's state and the scheduled client LR."""
        return {"rule": self.rule.state_dict(), "client_lr": self.client_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.rule.load_state_dict(state["rule"])
        self.client_lr = state["client_lr"]
