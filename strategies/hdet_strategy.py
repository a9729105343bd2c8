"""FedHDET on Flower: each sampled client trains with its own point of the spread.

The wrapped strategy samples, averages and (with a global rule) steps the global model;
this wrapper gives each training message its own instruction, with client slot ``i``'s
learning rate (and weight decay, when spread) from
:class:`~fedhyper.rules.hdet_clients.ClientSpread`, then moves the base values by the
signals of the replies the round aggregated. The maths lives in
:mod:`fedhyper.rules.hdet_clients`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch.utils.data import TensorDataset

from fedhyper.rules.hdet_clients import LR, SIGNALS, WEIGHT_DECAY, ClientSpread, relative_loss
from fedhyper.training import evaluate
from fedhyper.wire import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    PROBE_LOSS_AFTER_KEY,
    PROBE_LOSS_BEFORE_KEY,
    SCHEDULED_CLIENT_LR_KEY,
    TRAIN_LOSS_KEY,
    TrainInstruction,
)
from strategies.delegating import DelegatingStrategy

__all__ = ["HDETStrategy", "ValidationLoss"]


class ValidationLoss:
    """The loss of a returned model on a validation sample the server holds.

    Parameters
    ----------
    model : torch.nn.Module
        A model of the experiment's architecture, on ``device``; loaded with each model
        it scores.
    data : TensorDataset
        The common validation sample.
    device : torch.device
        Where to evaluate.

    """

    def __init__(self, model: torch.nn.Module, data: TensorDataset, device: torch.device):
        self.model = model
        self.data = data
        self.device = device

    def __call__(self, arrays: ArrayRecord) -> float:
        """Return the mean cross-entropy of the model ``arrays`` on the sample."""
        self.model.load_state_dict(arrays.to_torch_state_dict())
        return evaluate(self.model, self.data, device=self.device).loss


def _number(metrics: MetricRecord, key: str) -> float:
    """Return a reply's metric ``key``, which must be a number."""
    value = metrics.get(key)
    if not isinstance(value, int | float):
        raise ValueError(f"a training reply lacks the number {key!r} its FedHDET signal needs")
    return float(value)


class HDETStrategy(DelegatingStrategy):
    """Spread the clients' hyperparameters around base values that follow the signal.

    Parameters
    ----------
    inner : FedAvg or DelegatingStrategy
        Samples and aggregates (FedAvg, or a ``RuleStrategy`` with a global LR rule).
    spread : ClientSpread
        The spread hyperparameters and their state.
    signal : str
        One of :data:`~fedhyper.rules.hdet_clients.SIGNALS`.
    probe_examples : int
        Rows of its training data each client measures the loss on before and after
        training (``loss_drop``).
    validation : ValidationLoss or None
        Scores each returned model (``server_validation``).

    Raises
    ------
    ValueError
        If ``signal`` is unknown or lacks what it needs.

    """

    def __init__(
        self,
        inner: FedAvg | DelegatingStrategy,
        spread: ClientSpread,
        signal: str,
        *,
        probe_examples: int = 0,
        validation: ValidationLoss | None = None,
    ) -> None:
        super().__init__(inner)
        if signal not in SIGNALS:
            raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
        if (signal == "loss_drop" and probe_examples < 1) or (
            signal == "server_validation" and validation is None
        ):
            raise ValueError(f"signal {signal!r} needs probe_examples > 0 or a validation loss")
        self.spread = spread
        self.signal = signal
        self.probe_examples = probe_examples if signal == "loss_drop" else 0
        self.validation = validation
        self._sent: dict[int, dict[str, float]] = {}
        self._rejected: list[int] = []

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Let ``inner`` configure the round, then give each client its slot's values.

        A client's slot is its place among the sampled nodes in the grid's order (the
        runner's client order), so the assignment does not depend on the order in which
        Flower's sampling listed the messages; the messages come back in slot order.
        """
        messages = {
            message.metadata.dst_node_id: message
            for message in super().configure_train(server_round, arrays, config, grid)
        }
        slots = [node_id for node_id in grid.get_node_ids() if node_id in messages]
        assigned = self.spread.assign(server_round, len(slots))
        self._sent = dict(zip(slots, assigned, strict=True))
        return [self._with_values(messages[node_id]) for node_id in slots]

    def _with_values(self, message: Message) -> Message:
        """Return a copy of ``message`` whose instruction carries its client's values."""
        values = self._sent[message.metadata.dst_node_id]
        instruction = TrainInstruction.from_record(message.content[CONFIG_RECORD])
        task = instruction.task
        if WEIGHT_DECAY in values:
            task = replace(task, weight_decay=values[WEIGHT_DECAY])
        instruction = replace(
            instruction, lr=values[LR], task=task, probe_examples=self.probe_examples
        )
        # The round's messages share one RecordDict; each gets its own, sharing the arrays.
        content = RecordDict(dict(message.content.items()))
        content[CONFIG_RECORD] = ConfigRecord(instruction.to_record())
        return Message(
            content,
            dst_node_id=message.metadata.dst_node_id,
            message_type=message.metadata.message_type,
        )

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate with ``inner``, then move the base values by the replies' signals.

        The replies given here (those that passed the runner's screening) count with
        their signal; error replies among them, and replies from nodes this round did
        not instruct, carry none. The replies the screening rejected
        (:meth:`observe_rejected`) count as diverged: an infinite signal, weight 0, which
        moves the base away from their values. Failed and late clients do not count: a
        lost connection says nothing about a learning rate. The metrics' scheduled
        client LR is the base LR the round trained around.
        """
        replies = list(replies)
        answered = [
            reply
            for reply in replies
            if not reply.has_error() and reply.metadata.src_node_id in self._sent
        ]
        nodes = [reply.metadata.src_node_id for reply in answered] + self._rejected
        signals = [self._signal(reply) for reply in answered] + [math.inf] * len(self._rejected)
        self._rejected = []
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is None:
            return arrays, metrics
        base = self.spread.base(LR)
        self.spread.update([self._sent[node] for node in nodes], signals)
        metrics = metrics if metrics is not None else MetricRecord()
        metrics[SCHEDULED_CLIENT_LR_KEY] = base
        return arrays, metrics

    def observe_rejected(self, server_round: int, rejected: Sequence[Message]) -> None:
        """Remember which instructed clients' replies the screening rejected this round."""
        super().observe_rejected(server_round, rejected)
        self._rejected = [
            reply.metadata.src_node_id
            for reply in rejected
            if reply.metadata.src_node_id in self._sent
        ]

    def _signal(self, reply: Message) -> float:
        """Return a reply's signal, lower is better."""
        metrics = next(iter(reply.content.metric_records.values()))
        if self.signal == "train_loss":
            return _number(metrics, TRAIN_LOSS_KEY)
        if self.signal == "loss_drop":
            before = _number(metrics, PROBE_LOSS_BEFORE_KEY)
            return relative_loss(before, _number(metrics, PROBE_LOSS_AFTER_KEY))
        assert self.validation is not None  # checked in __init__
        return self.validation(reply.content.array_records[ARRAYS_RECORD])

    def state_dict(self) -> dict[str, Any]:
        """Return ``inner``'s state and the spread's."""
        return super().state_dict() | {"spread": self.spread.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        super().load_state_dict(state)
        self.spread.load_state_dict(state["spread"])
