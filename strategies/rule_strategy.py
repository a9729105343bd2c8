"""A Flower strategy that hands the aggregated update to a pure server rule."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedhyper.rules import FedExP, ServerRule, apply_rule
from fedhyper.wire import (
    ARRAYS_RECORD,
    PREVIOUS_DELTA_RECORD,
    PROBE_LOSS_AFTER_KEY,
    PROBE_LOSS_BEFORE_KEY,
    PROBE_LOSS_PREVIOUS_KEY,
    ServerStep,
    TrainInstruction,
    client_rule_means,
)


def trainable_delta(
    new: ArrayRecord, old: dict[str, torch.Tensor], keys: Sequence[str]
) -> list[torch.Tensor]:
    """Return ``new − old`` over the trainable keys, in order.

    Parameters
    ----------
    new : ArrayRecord
        Weights after the round (one client's, or the average).
    old : dict of str to Tensor
        Weights sent out at the start of the round, ``w_t``.
    keys : sequence of str
        Trainable floating-point parameter keys.

    Returns
    -------
    list of Tensor
        One tensor per key.

    """
    return [torch.from_numpy(new[key].numpy()) - old[key] for key in keys]


def reply_weight(reply: Message, key: str) -> float:
    """Return the aggregation weight a client reported (``num-examples`` or 1)."""
    value = next(iter(reply.content.metric_records.values()))[key]
    if not isinstance(value, int | float):
        raise TypeError(f"reply metric {key!r} must be a number, got {value!r}")
    return float(value)


class ProbeLosses(NamedTuple):
    """The clients' probe losses of a round, one value per reply without an error.

    NaN where a client measured none.
    """

    before: list[float]
    """On the global model it received, :math:`w_t`."""
    after: list[float]
    """On the model it trained."""
    previous: list[float]
    """On the previous round's global model, :math:`w_{t-1}`."""


def probe_losses(replies: Iterable[Message]) -> ProbeLosses:
    """Return each reply's probe losses; see :class:`ProbeLosses`."""
    probes = ProbeLosses([], [], [])
    keys = (PROBE_LOSS_BEFORE_KEY, PROBE_LOSS_AFTER_KEY, PROBE_LOSS_PREVIOUS_KEY)
    for reply in replies:
        if reply.has_error():
            continue
        metrics = next(iter(reply.content.metric_records.values()))
        for losses, key in zip(probes, keys, strict=True):
            losses.append(_number_or_nan(metrics.get(key)))
    return probes


def _number_or_nan(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


class RuleStrategy(FedAvg):
    """FedAvg's sampling and averaging, then a :class:`~fedhyper.rules.ServerRule` step.

    With ``Δ_t = average − w_t`` over the trainable floating-point parameters, the new
    global model is ``w_t + rule.step(Δ_t).update``, after the rule has observed the
    clients' mean client-rule reports (:meth:`ServerRule.observe_reports`) and, when it
    asks for them (:attr:`ServerRule.probe_examples`), each client's probe losses
    (:meth:`ServerRule.observe_probe_losses`); buffers
    (BatchNorm statistics, counters) take the plain average. When the rule schedules the
    clients' learning rate, it is the :class:`~fedhyper.wire.TrainInstruction`'s ``lr``,
    the LR clients train with. With ``send_previous_delta`` the unscaled ``Δ_{t−1}``
    travels to the clients as a second ArrayRecord (FedHyper-CL); a rule that
    :attr:`~fedhyper.rules.ServerRule.sends_applied_step` sends the step it applied,
    ``w_t − w_{t−1}``, instead; if the rule also
    :attr:`~fedhyper.rules.ServerRule.probes_previous_model`, the change of the float
    buffers joins that record and the clients probe ``w_{t−1}`` too
    (:attr:`~fedhyper.wire.TrainInstruction.probe_previous`).

    Parameters
    ----------
    rule : ServerRule
        The learning-rate rule (its state is the strategy's state).
    trainable_keys : sequence of str
        State-dict keys of the trainable floating-point parameters, in model order.
    send_previous_delta : bool
        Send ``Δ_{t−1}`` with the model from the second round on.
    **fedavg_kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg`.

    """

    def __init__(
        self,
        rule: ServerRule,
        trainable_keys: Sequence[str],
        *,
        send_previous_delta: bool = False,
        **fedavg_kwargs: Any,
    ):
        super().__init__(**fedavg_kwargs)
        self.rule = rule
        self.trainable_keys = list(trainable_keys)
        self.send_previous_delta = send_previous_delta or rule.sends_applied_step
        self.client_lr = rule.initial_client_lr()
        self.previous_delta: list[torch.Tensor] | None = None
        # The float buffers' change in the last round (BatchNorm statistics): with the
        # applied step it lets a client rebuild w_{t-1} whole for its probe.
        self.previous_buffer_step: dict[str, torch.Tensor] = {}
        self._current: dict[str, torch.Tensor] | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember ``w_t``, set the LR clients must use and attach ``Δ_{t−1}``."""
        self._current = dict(arrays.to_torch_state_dict())
        if self.client_lr is not None or self.rule.probe_examples:
            instruction = TrainInstruction.from_record(config)
            instruction = replace(
                instruction,
                lr=instruction.lr if self.client_lr is None else self.client_lr,
                probe_examples=self.rule.probe_examples,
                probe_previous=self._probes_previous,
            )
            config = ConfigRecord(instruction.to_record())
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if self.send_previous_delta and self.previous_delta is not None and messages:
            step = dict(zip(self.trainable_keys, self.previous_delta, strict=True))
            record = ArrayRecord(step | self.previous_buffer_step)
            # FedAvg shares one RecordDict between the round's messages.
            messages[0].content[PREVIOUS_DELTA_RECORD] = record
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the replies, then move ``w_t`` by the rule's step."""
        replies = list(replies)
        averaged, metrics = super().aggregate_train(server_round, replies)
        current = self._current
        if averaged is None or current is None:
            return averaged, metrics
        if isinstance(self.rule, FedExP):
            self._observe_clients(replies, current)
        if metrics is not None:
            self.rule.observe_reports(client_rule_means(metrics))
        if self.rule.probe_examples:
            probes = probe_losses(replies)
            self.rule.observe_probe_losses(probes.before, probes.after, probes.previous)
        new_state, step, delta = apply_rule(
            self.rule, current, averaged.to_torch_state_dict(), self.trainable_keys
        )
        scheduled_lr = self.client_lr
        if step.client_lr is not None:
            self.client_lr = step.client_lr
        if self.send_previous_delta:
            self.previous_delta = step.update if self.rule.sends_applied_step else delta
        if self._probes_previous:
            trainable = set(self.trainable_keys)
            self.previous_buffer_step = {
                key: value - current[key]
                for key, value in new_state.items()
                if key not in trainable and value.is_floating_point()
            }
        metrics = metrics if metrics is not None else MetricRecord()
        record = ServerStep(step.global_lr, step.hypergradient, scheduled_lr, step.clients_diverged)
        metrics.update(record.to_record())
        return ArrayRecord(new_state), metrics

    @property
    def _probes_previous(self) -> bool:
        """Whether the clients probe the previous global model, rebuilt from the step."""
        rule = self.rule
        return rule.probes_previous_model and bool(rule.probe_examples) and rule.sends_applied_step

    def _observe_clients(self, replies: list[Message], current: dict[str, torch.Tensor]) -> None:
        """Feed each client's own update to FedExP, with the aggregation's weights."""
        assert isinstance(self.rule, FedExP)
        for reply in replies:
            if reply.has_error():
                continue
            weight = reply_weight(reply, self.weighted_by_key)
            client_arrays = reply.content.array_records[ARRAYS_RECORD]
            self.rule.add_client(
                trainable_delta(client_arrays, current, self.trainable_keys), weight
            )

    def state_dict(self) -> dict[str, Any]:
        """Return the rule's state, the scheduled client LR, ``Δ_{t−1}`` and the buffers'."""
        return {
            "rule": self.rule.state_dict(),
            "client_lr": self.client_lr,
            "previous_delta": self.previous_delta,
            "previous_buffer_step": self.previous_buffer_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.rule.load_state_dict(state["rule"])
        self.client_lr = state["client_lr"]
        self.previous_delta = state["previous_delta"]
        # Checkpoints written before the buffers' step was kept have none.
        self.previous_buffer_step = state.get("previous_buffer_step", {})
