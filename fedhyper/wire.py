"""The messages between ServerApp and ClientApp, as typed dataclasses.

Every record name and every key a message carries is spelled here and nowhere else. A
message's contents are flat records of scalars, which is what Flower's ``ConfigRecord``
and ``MetricRecord`` hold; the apps wrap them, so this module needs no Flower. Reading a
record is strict: a missing key, a key no message of that kind has, or a value of the
wrong type raises :class:`WireFormatError` naming the key, so a renamed key fails loudly
instead of turning into NaN.

The server sends a :class:`TrainInstruction` (or an :class:`EvaluateInstruction`), each
holding the experiment's :class:`ClientTask`, so that a deployed SuperNode needs no copy
of the experiment's configuration files. A client is a partition of a shared dataset,
trained by whichever node the server assigns it to, or a SuperNode's own data: one
message to a node bundles the instructions of all the clients it trains that round,
each client's records under ``<record>@<slot>`` (:func:`slot_record`), the records all
of them share once under their plain name; the reply bundles one result per slot, a
:class:`SlotFailure` where a client failed. A client answers with a :class:`TrainReport`
(or an :class:`EvaluateReport`); a node's :class:`NodeInfo` answers the server's
:class:`NodeQuery`.
The strategies write a :class:`ServerStep` into the aggregated training metrics, which
the round reads back as a :class:`RoundTraining`.

FedMAID's server asks its clients through query actions (``query.<action>``): a
:class:`BilevelQuery` with tensors under :data:`BILEVEL_TENSORS_RECORD`, answered by
a :class:`ShardInfo` (``BILEVEL_DESCRIBE_ACTION``), a :class:`ShardLoss` and the
gradient (``BILEVEL_GRADIENT_ACTION``), a Hessian-vector product
(``BILEVEL_HESSIAN_VECTOR_ACTION``), or the gradient and a locally trained point
(``BILEVEL_LOCAL_DESCENT_ACTION``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar, cast

from fedhyper.config import ClientRuleConfig, DatasetSpec, ExperimentConfig
from fedhyper.data.federated import ClientData, client_data
from fedhyper.errors import FedHyperError
from fedhyper.faults import FaultPlan

Scalar = bool | int | float | str
"""A setting's value."""

ConfigValue = (
    int
    | float
    | str
    | bytes
    | bool
    | list[int]
    | list[float]
    | list[str]
    | list[bytes]
    | list[bool]
)
"""What a Flower ``ConfigRecord`` holds: instructions are made of these."""

MetricValue = int | float | list[int] | list[float]
"""What a Flower ``MetricRecord`` holds: reports are made of these."""

InstructionRecord = dict[str, ConfigValue]
ReportRecord = dict[str, MetricValue]

ARRAYS_RECORD = "arrays"
"""Record holding the model weights, in messages both ways."""

PREVIOUS_DELTA_RECORD = "previous-delta"
"""Training-message record holding Δ_{t−1} (unscaled) for FedHyper-CL clients."""

CONFIG_RECORD = "config"
"""Record holding an instruction (the name Flower's strategies write it under)."""

METRICS_RECORD = "metrics"
"""Record holding a client's report."""

PARTITION_ID_KEY = "partition-id"
"""Node-config key the simulation engine sets on every SuperNode, and the metric a node
answers the server's query with: a node that has it can train any partition of the
shared dataset (its value orders the nodes); a node without it has its own data."""

PARTITION_KEY = "client-partition"
"""Instruction key of the partition a client trains or evaluates on; without it, the
client is the receiving SuperNode's own data."""

CLIENT_RULE_STATE_RECORD = "client-rule-state"
"""Reply record of what a client's rule keeps for its next round; the server keeps it
per client and sends it back in the client's next instruction."""
CLIENT_RULE_STATE_PREFIX = "client-rule-state."
"""Instruction prefix of what the client's rule kept from its previous round."""

FAILURE_RECORD = "failure"
"""Reply record, in place of a client's result, of a client that failed."""
FAILURE_REASON_KEY = "reason"
FAILURE_LATE_KEY = "late"

SLOT_SEPARATOR = "@"
"""Between a record's name and its slot in a bundle of several clients' records."""

NUM_EXAMPLES_KEY = "num-examples"
"""Reply metric Flower's FedAvg can weight the average by (the clients' example counts)."""

UNIFORM_WEIGHT_KEY = "uniform-weight"
"""Reply metric equal to 1 on every client: weighting by it gives the plain mean."""

SERVER_ROUND_KEY = "server-round"
"""The round, which Flower's FedAvg also writes into every instruction it sends."""

ATTEMPT_KEY = "attempt"
LR_KEY = "lr"
CLIENT_RULE_KEY = "client-rule"
CLIENT_RULE_PREFIX = "client-rule."
"""Prefix of a client rule's settings (instructions) and of its report (replies)."""
FAULT_PREFIX = "fault-"
DATASET_PREFIX = "dataset."

TRAIN_LOSS_KEY = "train-loss"
STEPS_KEY = "steps"
LR_STAT_KEYS = {
    "lr_first": "lr-first",
    "lr_last": "lr-last",
    "lr_mean": "lr-mean",
    "lr_min": "lr-min",
    "lr_max": "lr-max",
}
"""The reply metric of each learning-rate statistic of a :class:`TrainReport`."""
PROBE_EXAMPLES_KEY = "probe-examples"
PROBE_LOSS_BEFORE_KEY = "probe-loss-before"
PROBE_LOSS_AFTER_KEY = "probe-loss-after"
PROBE_PREVIOUS_KEY = "probe-previous"
PROBE_LOSS_PREVIOUS_KEY = "probe-loss-previous"
EVAL_LOSS_KEY = "eval-loss"
EVAL_ACCURACY_KEY = "eval-accuracy"
GLOBAL_LR_KEY = "global-lr"
HYPERGRADIENT_KEY = "global-hypergradient"
SCHEDULED_CLIENT_LR_KEY = "scheduled-client-lr"
CLIENTS_DIVERGED_KEY = "clients-diverged"
DEVICE_KEY = "client-device"

NODE_CONFIG_ERROR_CODE = 1001
"""Error code of a reply from a node that cannot run the task as configured (e.g.
``client.device=cuda`` without CUDA); the reason is the node's one-line ConfigError.
Flower's own codes (``flwr.common.constant.ErrorCode``) are small integers."""

BILEVEL_DESCRIBE_ACTION = "bilevel_describe"
BILEVEL_GRADIENT_ACTION = "bilevel_gradient"
BILEVEL_HESSIAN_VECTOR_ACTION = "bilevel_hessian_vector"
BILEVEL_LOCAL_DESCENT_ACTION = "bilevel_local_descent"
"""Query actions of FedMAID's clients (Python names, as Flower requires): a message of
type ``query.<action>`` reaches each."""

BILEVEL_TENSORS_RECORD = "bilevel-tensors"
"""Array record of FedMAID's queries and replies, one tensor under each key below."""
BILEVEL_POINT_KEY = "bilevel-point"
BILEVEL_THETA_KEY = "bilevel-theta"
BILEVEL_VECTOR_KEY = "bilevel-vector"
BILEVEL_SHARD_GRADIENT_KEY = "bilevel-shard-gradient"
BILEVEL_SHARD_PRODUCT_KEY = "bilevel-shard-product"
BILEVEL_LOCAL_POINT_KEY = "bilevel-local-point"
BILEVEL_LOSS_KEY = "bilevel-loss"
BILEVEL_EXAMPLES_KEY = "bilevel-examples"
BILEVEL_SMOOTHNESS_KEY = "bilevel-smoothness"
BILEVEL_CLASSES_KEY = "bilevel-classes"

_ACCEPTED: dict[type, tuple[type, ...]] = {
    bool: (bool,),
    int: (int,),
    float: (int, float),  # a float setting may arrive as an int, e.g. 1 for 1.0
    str: (str,),
}
_ANNOTATIONS = {kind.__name__: kind for kind in _ACCEPTED}
"""Dataclass field annotations (strings, under postponed evaluation) to their types."""

_Value = TypeVar("_Value", bool, int, float, str)


class WireFormatError(FedHyperError):
    """A received record does not match its kind of message.

    It lacks a key, has one that kind never carries, or has a value of the wrong type
    (e.g. between a server and a SuperNode of different versions).
    """


class _Reader:
    """Take typed values out of a received record, then insist nothing is left over."""

    def __init__(self, record: Mapping[str, Any], kind: str) -> None:
        self._record = record
        self._kind = kind
        self._unread = set(record)

    def take(self, key: str, kind: type[_Value]) -> _Value:
        """Return the value of ``key``, which must be present and of type ``kind``."""
        if key not in self._record:
            raise WireFormatError(f"{self._kind} lacks the key {key!r}")
        return self._typed(key, kind)

    def take_optional(self, key: str, kind: type[_Value]) -> _Value | None:
        """Return the value of ``key``, or ``None`` when the record does not have it."""
        return self._typed(key, kind) if key in self._record else None

    def take_prefixed(self, prefix: str) -> dict[str, Scalar]:
        """Return every ``prefix<name>`` entry of any scalar type as ``{name: value}``."""
        keys = sorted(key for key in self._unread if key.startswith(prefix))
        for key in keys:
            if not isinstance(self._record[key], bool | int | float | str):
                raise WireFormatError(
                    f"{self._kind} key {key!r} holds {self._record[key]!r}, not a scalar"
                )
            self._unread.discard(key)
        return {key.removeprefix(prefix): self._record[key] for key in keys}

    def take_prefixed_numbers(self, prefix: str) -> dict[str, float]:
        """Return every ``prefix<name>`` entry, each a number, as ``{name: value}``."""
        keys = sorted(key for key in self._unread if key.startswith(prefix))
        return {key.removeprefix(prefix): self._typed(key, float) for key in keys}

    def take_list(self, key: str, kind: type[_Value]) -> list[_Value]:
        """Return the list under ``key``, each element of type ``kind``."""
        if key not in self._record:
            raise WireFormatError(f"{self._kind} lacks the key {key!r}")
        values = self._record[key]
        if not isinstance(values, list):
            raise WireFormatError(f"{self._kind} key {key!r} holds {values!r}, not a list")
        checked = [self._element(key, value, kind) for value in values]
        self._unread.discard(key)
        return checked

    def take_fields(
        self, cls: type[Any], prefix: str = "", skip: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Return the values of a dataclass's fields, stored under ``prefix<field>``.

        Fields named in ``skip`` are left to the caller (a nested dataclass).
        """
        values: dict[str, Any] = {}
        for item in fields(cls):
            if item.name in skip:
                continue
            annotation = str(item.type)
            key = prefix + item.name
            if annotation.startswith("list["):
                values[item.name] = self.take_list(key, _ANNOTATIONS[annotation[5:-1]])
            else:
                values[item.name] = self.take(key, _ANNOTATIONS[annotation])
        return values

    def has_any(self, prefix: str) -> bool:
        """Whether any unread key starts with ``prefix``."""
        return any(key.startswith(prefix) for key in self._unread)

    def done(self) -> None:
        """Raise if the record held a key that was not read."""
        if self._unread:
            raise WireFormatError(f"{self._kind} has the unknown key {min(self._unread)!r}")

    def _typed(self, key: str, kind: type[_Value]) -> _Value:
        value = self._element(key, self._record[key], kind)
        self._unread.discard(key)
        return value

    def _element(self, key: str, value: Any, kind: type[_Value]) -> _Value:
        # bool is an int in Python, but a flag is never a count.
        if not isinstance(value, _ACCEPTED[kind]) or (isinstance(value, bool) and kind is not bool):
            raise WireFormatError(
                f"{self._kind} key {key!r} holds {value!r}, not a {kind.__name__}"
            )
        return kind(cast(_Value, value))  # an int arriving for a float becomes one


@dataclass(frozen=True)
class ClientTask:
    """What a client must know of the experiment to train or evaluate.

    ``data_dir`` and ``cache_dir`` are empty strings when the client should use its own
    defaults (a SuperNode's node-config may name its local directory instead). The
    learning rate to train with travels in the :class:`TrainInstruction`. The dataset's
    spec travels with the task as ``dataset.<field>`` keys, so a client needs no
    configuration files.
    """

    dataset: DatasetSpec
    data_dir: str
    cache_dir: str
    validation_fraction: float
    partition_kind: str
    num_partitions: int
    alpha: float
    classes_per_client: int
    seed: int
    model: str
    hidden_size: int
    optimizer: str
    momentum: float
    weight_decay: float
    local_epochs: int
    batch_size: int
    max_steps: int
    device: str
    flush_denormals: bool
    clients_per_round: int

    @classmethod
    def from_experiment(cls, config: ExperimentConfig) -> ClientTask:
        """Extract the client's part of an experiment.

        Parameters
        ----------
        config : ExperimentConfig
            The resolved experiment.

        Returns
        -------
        ClientTask
            The task to send to every client.

        """
        dataset, partition, client = config.dataset, config.partition, config.client
        return cls(
            dataset=dataset.spec(),
            data_dir=dataset.data_dir or "",
            cache_dir=dataset.cache_dir or "",
            validation_fraction=dataset.validation_fraction,
            partition_kind=partition.kind,
            num_partitions=partition.num_clients,
            alpha=partition.alpha,
            classes_per_client=partition.classes_per_client,
            seed=config.seed,
            model=config.model.name,
            hidden_size=config.model.hidden_size,
            optimizer=client.optimizer,
            momentum=client.momentum,
            weight_decay=client.weight_decay,
            local_epochs=client.local_epochs,
            batch_size=client.batch_size,
            max_steps=client.max_steps,
            device=client.device,
            flush_denormals=client.flush_denormals,
            clients_per_round=config.strategy.clients_per_round,
        )

    def to_record(self) -> InstructionRecord:
        """Flatten to scalars and lists of scalars, the spec under ``dataset.<field>``."""
        values: InstructionRecord = {
            item.name: getattr(self, item.name) for item in fields(self) if item.name != "dataset"
        }
        spec = {
            DATASET_PREFIX + item.name: getattr(self.dataset, item.name)
            for item in fields(DatasetSpec)
        }
        return values | spec

    @classmethod
    def _read(cls, reader: _Reader) -> ClientTask:
        spec = DatasetSpec(**reader.take_fields(DatasetSpec, DATASET_PREFIX))
        return cls(dataset=spec, **reader.take_fields(cls, skip=("dataset",)))

    def partition(self, partition_id: int, data_dir: str | None = None) -> ClientData:
        """Load one client's share of the partitioned dataset this task describes.

        Parameters
        ----------
        partition_id : int
            Which client, in ``[0, num_partitions)``.
        data_dir : str or None
            A directory that overrides the task's (a SuperNode's own mirror).

        Returns
        -------
        ClientData
            The client's train and validation splits.

        """
        return client_data(
            self.dataset,
            partition_id,
            data_dir=data_dir or self.data_dir or None,
            cache_dir=self.cache_dir or None,
            kind=self.partition_kind,
            num_clients=self.num_partitions,
            alpha=self.alpha,
            classes_per_client=self.classes_per_client,
            seed=self.seed,
            validation_fraction=self.validation_fraction,
        )


def rule_settings(settings: ClientRuleConfig) -> dict[str, Scalar]:
    """Flatten a client rule's settings, without its name, for the training message."""
    values = asdict(settings)
    del values["name"]
    return values


@dataclass(frozen=True)
class TrainInstruction:
    """What the server sends every client it samples for one attempt of a round.

    Attributes
    ----------
    server_round : int
        The round, from 1.
    attempt : int
        0 for a round's first try, 1, 2, ... for its retries.
    lr : float
        The learning rate to train with: the client's configured one, or the one a
        server rule schedules.
    task : ClientTask
        The experiment's data, model and optimiser.
    client_rule : str
        The client's learning-rate rule.
    client_rule_settings : mapping of str to scalar
        That rule's settings.
    faults : FaultPlan or None
        Faults to inject (robustness tests); ``None`` sends none.
    probe_examples : int
        Measure the loss of the first this many rows of the client's training split
        before and after training, and report both (FedHDET's ``loss_drop`` signal);
        0 measures nothing.
    probe_previous : bool
        Also measure the loss of those rows on the previous round's global model,
        :math:`w_{t-1} = w_t - d_{t-1}`, from the step :math:`d_{t-1}` the server applied
        (sent as the previous-delta record), and report it: the secant test of the
        server's last step.
    partition : int or None
        The client's partition; ``None`` for the receiving SuperNode's own data.
    client_rule_state : mapping of str to float
        What the client's rule kept from the client's previous round (empty in its first).

    """

    server_round: int
    attempt: int
    lr: float
    task: ClientTask
    client_rule: str
    client_rule_settings: Mapping[str, Scalar] = field(default_factory=dict)
    faults: FaultPlan | None = None
    probe_examples: int = 0
    probe_previous: bool = False
    partition: int | None = None
    client_rule_state: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_experiment(
        cls, config: ExperimentConfig, server_round: int, attempt: int
    ) -> TrainInstruction:
        """Return one attempt's instruction, with the client's configured learning rate.

        Parameters
        ----------
        config : ExperimentConfig
            The resolved experiment.
        server_round : int
            The round, from 1.
        attempt : int
            0 for the first try.

        Returns
        -------
        TrainInstruction
            The instruction, carrying the experiment's fault plan.

        """
        return cls(
            server_round=server_round,
            attempt=attempt,
            lr=config.client.lr,
            task=ClientTask.from_experiment(config),
            client_rule=config.client.rule.name,
            client_rule_settings=rule_settings(config.client.rule),
            faults=FaultPlan.from_experiment(config),
        )

    def to_record(self) -> InstructionRecord:
        """Flatten to scalars."""
        record: InstructionRecord = {
            SERVER_ROUND_KEY: self.server_round,
            ATTEMPT_KEY: self.attempt,
            LR_KEY: self.lr,
            **self.task.to_record(),
            CLIENT_RULE_KEY: self.client_rule,
        }
        record |= {CLIENT_RULE_PREFIX + k: v for k, v in self.client_rule_settings.items()}
        if self.faults is not None:
            record |= {FAULT_PREFIX + k: v for k, v in asdict(self.faults).items()}
        if self.probe_examples:
            record[PROBE_EXAMPLES_KEY] = self.probe_examples
        if self.probe_previous:
            record[PROBE_PREVIOUS_KEY] = True
        if self.partition is not None:
            record[PARTITION_KEY] = self.partition
        record |= {CLIENT_RULE_STATE_PREFIX + k: v for k, v in self.client_rule_state.items()}
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrainInstruction:
        """Read an instruction back from a received record.

        Raises
        ------
        WireFormatError
            For a missing, unknown or mistyped key.

        """
        reader = _Reader(record, "training instruction")
        instruction = cls(
            server_round=reader.take(SERVER_ROUND_KEY, int),
            attempt=reader.take(ATTEMPT_KEY, int),
            lr=reader.take(LR_KEY, float),
            task=ClientTask._read(reader),
            client_rule=reader.take(CLIENT_RULE_KEY, str),
            client_rule_settings=reader.take_prefixed(CLIENT_RULE_PREFIX),
            faults=(
                FaultPlan(**reader.take_fields(FaultPlan, FAULT_PREFIX))
                if reader.has_any(FAULT_PREFIX)
                else None
            ),
            probe_examples=reader.take_optional(PROBE_EXAMPLES_KEY, int) or 0,
            probe_previous=reader.take_optional(PROBE_PREVIOUS_KEY, bool) or False,
            partition=reader.take_optional(PARTITION_KEY, int),
            client_rule_state=reader.take_prefixed_numbers(CLIENT_RULE_STATE_PREFIX),
        )
        reader.done()
        return instruction


@dataclass(frozen=True)
class EvaluateInstruction:
    """What the server sends the clients that evaluate a round's global model.

    ``partition`` is the client's partition, ``None`` for the receiving SuperNode's own
    data.
    """

    server_round: int
    task: ClientTask
    partition: int | None = None

    def to_record(self) -> InstructionRecord:
        """Flatten to scalars."""
        record: InstructionRecord = {SERVER_ROUND_KEY: self.server_round, **self.task.to_record()}
        if self.partition is not None:
            record[PARTITION_KEY] = self.partition
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EvaluateInstruction:
        """Read an instruction back from a received record.

        Raises
        ------
        WireFormatError
            For a missing, unknown or mistyped key.

        """
        reader = _Reader(record, "evaluation instruction")
        instruction = cls(
            server_round=reader.take(SERVER_ROUND_KEY, int),
            task=ClientTask._read(reader),
            partition=reader.take_optional(PARTITION_KEY, int),
        )
        reader.done()
        return instruction


@dataclass(frozen=True)
class TrainReport:
    """What a client reports of its local training.

    Attributes
    ----------
    num_examples : int
        Training examples it holds (FedAvg's weight).
    train_loss : float
        Mean training loss.
    steps : int
        Optimiser steps taken.
    lr_first, lr_last, lr_mean, lr_min, lr_max : float
        Statistics of the per-step learning rates it trained with.
    client_rule_report : mapping of str to float
        Figures its client rule reports.
    probe_loss_before, probe_loss_after : float or None
        The loss on the probe rows (:attr:`TrainInstruction.probe_examples`) of the
        model it received and of the model it trained; ``None`` when not asked.
    probe_loss_previous : float or None
        The loss on the same rows of the previous round's global model
        (:attr:`TrainInstruction.probe_previous`); ``None`` when not asked or when the
        server sent no step (the first round).

    """

    num_examples: int
    train_loss: float
    steps: int
    lr_first: float
    lr_last: float
    lr_mean: float
    lr_min: float
    lr_max: float
    client_rule_report: Mapping[str, float] = field(default_factory=dict)
    probe_loss_before: float | None = None
    probe_loss_after: float | None = None
    probe_loss_previous: float | None = None

    @classmethod
    def from_lrs(
        cls,
        num_examples: int,
        train_loss: float,
        lrs: Sequence[float],
        client_rule_report: Mapping[str, float] | None = None,
    ) -> TrainReport:
        """Summarise the learning rates of the steps taken (at least one).

        Parameters
        ----------
        num_examples : int
            Training examples.
        train_loss : float
            Mean training loss.
        lrs : sequence of float
            The learning rate of every step.
        client_rule_report : mapping or None
            The client rule's figures.

        Returns
        -------
        TrainReport
            The report.

        """
        return cls(
            num_examples=num_examples,
            train_loss=train_loss,
            steps=len(lrs),
            lr_first=lrs[0],
            lr_last=lrs[-1],
            lr_mean=statistics.fmean(lrs),
            lr_min=min(lrs),
            lr_max=max(lrs),
            client_rule_report=dict(client_rule_report or {}),
        )

    def to_record(self) -> ReportRecord:
        """Flatten to scalars, with both weighting keys."""
        record: ReportRecord = {
            TRAIN_LOSS_KEY: self.train_loss,
            NUM_EXAMPLES_KEY: self.num_examples,
            UNIFORM_WEIGHT_KEY: 1,
            STEPS_KEY: self.steps,
        }
        record |= {key: getattr(self, name) for name, key in LR_STAT_KEYS.items()}
        record |= {CLIENT_RULE_PREFIX + k: v for k, v in self.client_rule_report.items()}
        if self.probe_loss_before is not None:
            record[PROBE_LOSS_BEFORE_KEY] = self.probe_loss_before
        if self.probe_loss_after is not None:
            record[PROBE_LOSS_AFTER_KEY] = self.probe_loss_after
        if self.probe_loss_previous is not None:
            record[PROBE_LOSS_PREVIOUS_KEY] = self.probe_loss_previous
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrainReport:
        """Read a report back from a received record.

        Raises
        ------
        WireFormatError
            For a missing, unknown or mistyped key.

        """
        reader = _Reader(record, "training reply")
        reader.take(UNIFORM_WEIGHT_KEY, int)
        report = cls(
            num_examples=reader.take(NUM_EXAMPLES_KEY, int),
            train_loss=reader.take(TRAIN_LOSS_KEY, float),
            steps=reader.take(STEPS_KEY, int),
            **{name: reader.take(key, float) for name, key in LR_STAT_KEYS.items()},
            client_rule_report=reader.take_prefixed_numbers(CLIENT_RULE_PREFIX),
            probe_loss_before=reader.take_optional(PROBE_LOSS_BEFORE_KEY, float),
            probe_loss_after=reader.take_optional(PROBE_LOSS_AFTER_KEY, float),
            probe_loss_previous=reader.take_optional(PROBE_LOSS_PREVIOUS_KEY, float),
        )
        reader.done()
        return report


@dataclass(frozen=True)
class EvaluateReport:
    """What a client reports of evaluating the global model on its validation split."""

    loss: float
    accuracy: float
    num_examples: int

    def to_record(self) -> ReportRecord:
        """Flatten to scalars, with both weighting keys."""
        return {
            EVAL_LOSS_KEY: self.loss,
            EVAL_ACCURACY_KEY: self.accuracy,
            NUM_EXAMPLES_KEY: self.num_examples,
            UNIFORM_WEIGHT_KEY: 1,
        }


@dataclass(frozen=True)
class FederatedEvaluation:
    """The strategy's weighted average of a round's :class:`EvaluateReport` s."""

    loss: float
    accuracy: float

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FederatedEvaluation:
        """Read the aggregate (it keeps the weighting key it was not weighted by).

        Raises
        ------
        WireFormatError
            For a missing, unknown or mistyped key.

        """
        reader = _Reader(record, "aggregated evaluation")
        reader.take_optional(NUM_EXAMPLES_KEY, float)
        reader.take_optional(UNIFORM_WEIGHT_KEY, float)
        evaluation = cls(
            loss=reader.take(EVAL_LOSS_KEY, float),
            accuracy=reader.take(EVAL_ACCURACY_KEY, float),
        )
        reader.done()
        return evaluation


@dataclass(frozen=True)
class ServerStep:
    """What a server rule did in a round, written into the aggregated training metrics.

    Attributes
    ----------
    global_lr : float
        The global learning rate the aggregated update was scaled by.
    hypergradient : float
        The hypergradient that set it.
    scheduled_client_lr : float or None
        The learning rate the clients trained with, when the server scheduled it.
    clients_diverged : bool
        Whether the rule read the round's clients as diverged and capped its step.

    """

    global_lr: float = 1.0
    hypergradient: float = 0.0
    scheduled_client_lr: float | None = None
    clients_diverged: bool = False

    def to_record(self) -> ReportRecord:
        """Flatten to scalars.

        The scheduled LR's key is there only when one was scheduled, the divergence
        flag's only when the clients diverged.
        """
        record: ReportRecord = {
            GLOBAL_LR_KEY: self.global_lr,
            HYPERGRADIENT_KEY: self.hypergradient,
        }
        if self.scheduled_client_lr is not None:
            record[SCHEDULED_CLIENT_LR_KEY] = self.scheduled_client_lr
        if self.clients_diverged:
            record[CLIENTS_DIVERGED_KEY] = 1
        return record


def client_rule_means(aggregate: Mapping[str, Any]) -> dict[str, float]:
    """Return the client rule's figures out of a round's aggregated training metrics.

    Flower's FedAvg averages every reply metric with the aggregation's weights, so each
    value is the clients' mean of what their rule reported under that key.

    Parameters
    ----------
    aggregate : mapping
        The strategy's weighted average of the round's :class:`TrainReport` records.

    Returns
    -------
    dict of str to float
        ``{key: mean}`` for every key of :meth:`TrainReport.client_rule_report`.

    Raises
    ------
    WireFormatError
        For a client-rule figure that is not a number.

    """
    return _Reader(aggregate, "aggregated training metrics").take_prefixed_numbers(
        CLIENT_RULE_PREFIX
    )


@dataclass(frozen=True)
class RoundTraining:
    """A round's aggregated training metrics, as the strategy returns them.

    The mean of the clients' :class:`TrainReport` figures, plus the :class:`ServerStep`
    when the strategy has a server rule (a plain average has global LR 1 and no
    hypergradient).
    """

    train_loss: float
    step: ServerStep

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RoundTraining:
        """Read the aggregate.

        Raises
        ------
        WireFormatError
            For a missing, unknown or mistyped key.

        """
        reader = _Reader(record, "aggregated training metrics")
        averaged = (NUM_EXAMPLES_KEY, UNIFORM_WEIGHT_KEY, STEPS_KEY, *LR_STAT_KEYS.values())
        probes = (PROBE_LOSS_BEFORE_KEY, PROBE_LOSS_AFTER_KEY, PROBE_LOSS_PREVIOUS_KEY)
        for key in (*averaged, *probes):
            reader.take_optional(key, float)
        reader.take_prefixed(CLIENT_RULE_PREFIX)
        default = ServerStep()
        global_lr = reader.take_optional(GLOBAL_LR_KEY, float)
        hypergradient = reader.take_optional(HYPERGRADIENT_KEY, float)
        training = cls(
            train_loss=reader.take(TRAIN_LOSS_KEY, float),
            step=ServerStep(
                global_lr=default.global_lr if global_lr is None else global_lr,
                hypergradient=default.hypergradient if hypergradient is None else hypergradient,
                scheduled_client_lr=reader.take_optional(SCHEDULED_CLIENT_LR_KEY, float),
                clients_diverged=bool(reader.take_optional(CLIENTS_DIVERGED_KEY, int)),
            ),
        )
        reader.done()
        return training


@dataclass(frozen=True)
class NodeQuery:
    """The server's first message to every node: what the node must be able to run.

    Sent before any round, so that a node lacking the device fails the run at once.
    """

    device: str

    def to_record(self) -> InstructionRecord:
        """Flatten to scalars."""
        return {DEVICE_KEY: self.device}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> NodeQuery:
        """Read the server's query.

        Raises
        ------
        WireFormatError
            For a missing, unknown or mistyped key.

        """
        reader = _Reader(record, "node query")
        query = cls(device=reader.take(DEVICE_KEY, str))
        reader.done()
        return query


@dataclass(frozen=True)
class NodeInfo:
    """A SuperNode's answer to the server's query: the partition it serves, if any."""

    partition: int | None

    def to_record(self) -> ReportRecord:
        """Flatten to scalars (empty for a node without a partition)."""
        return {} if self.partition is None else {PARTITION_ID_KEY: self.partition}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> NodeInfo:
        """Read a node's answer.

        Raises
        ------
        WireFormatError
            For an unknown key or a partition that is not an integer.

        """
        reader = _Reader(record, "node answer")
        info = cls(partition=reader.take_optional(PARTITION_ID_KEY, int))
        reader.done()
        return info


@dataclass(frozen=True)
class BilevelQuery:
    """What FedMAID's server sends with every query: which shard, and local training.

    The fields besides the last two say how to build the 12x12 task
    (:func:`fedhyper.bilevel.fashion12.load_fashion12`), so a client loads the same
    shards the server's settings describe; ``data_dir`` and ``cache_dir`` are empty
    strings for the client's defaults.

    Attributes
    ----------
    local_steps : int
        Local steps of a local-descent query (0 for the other actions).
    step_size : float
        Their step size (0 for the other actions).

    """

    train_examples: int
    validation_examples: int
    num_partitions: int
    alpha: float
    seed: int
    data_dir: str
    cache_dir: str
    local_steps: int = 0
    step_size: float = 0.0

    def to_record(self) -> InstructionRecord:
        """Flatten to scalars, one key per field."""
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> BilevelQuery:
        """Read a received query.

        Raises
        ------
        WireFormatError
            For a missing, unknown or mistyped key.

        """
        reader = _Reader(record, "bilevel query")
        query = cls(**reader.take_fields(cls))
        reader.done()
        return query


@dataclass(frozen=True)
class ShardInfo:
    """A client's answer to the describe query: the size and constants of its shard."""

    num_examples: int
    smoothness: float
    classes: int

    def to_record(self) -> ReportRecord:
        """Flatten to scalars."""
        return {
            BILEVEL_EXAMPLES_KEY: self.num_examples,
            BILEVEL_SMOOTHNESS_KEY: self.smoothness,
            BILEVEL_CLASSES_KEY: self.classes,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ShardInfo:
        """Read a client's answer.

        Raises
        ------
        WireFormatError
            For a missing, unknown or mistyped key.

        """
        reader = _Reader(record, "shard description")
        info = cls(
            num_examples=reader.take(BILEVEL_EXAMPLES_KEY, int),
            smoothness=reader.take(BILEVEL_SMOOTHNESS_KEY, float),
            classes=reader.take(BILEVEL_CLASSES_KEY, int),
        )
        reader.done()
        return info


@dataclass(frozen=True)
class ShardLoss:
    """The loss a client reports with its gradient."""

    loss: float

    def to_record(self) -> ReportRecord:
        """Flatten to scalars."""
        return {BILEVEL_LOSS_KEY: self.loss}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ShardLoss:
        """Read a client's loss.

        Raises
        ------
        WireFormatError
            For a missing, unknown or mistyped key.

        """
        reader = _Reader(record, "shard loss")
        loss = cls(loss=reader.take(BILEVEL_LOSS_KEY, float))
        reader.done()
        return loss


@dataclass(frozen=True)
class SlotFailure:
    """Why a client of a bundle sent no result.

    Attributes
    ----------
    reason : str
        What went wrong.
    late : bool
        The client missed the round's deadline (a straggler): the server counts a
        timeout, as for a node that does not answer, without holding up the clients
        bundled with it.

    """

    reason: str
    late: bool = False

    def to_record(self) -> InstructionRecord:
        """Flatten to scalars."""
        return {FAILURE_REASON_KEY: self.reason, FAILURE_LATE_KEY: self.late}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SlotFailure:
        """Read a failure back from a received record.

        Raises
        ------
        WireFormatError
            For a missing, unknown or mistyped key.

        """
        reader = _Reader(record, "client failure")
        failure = cls(
            reason=reader.take(FAILURE_REASON_KEY, str), late=reader.take(FAILURE_LATE_KEY, bool)
        )
        reader.done()
        return failure


def slot_record(name: str, slot: int) -> str:
    """Return the name of record ``name`` of the client in ``slot`` of a bundle."""
    return f"{name}{SLOT_SEPARATOR}{slot}"


def split_slots(names: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Sort a bundle's record names into shared ones and each slot's.

    Parameters
    ----------
    names : sequence of str
        The record names of a bundled message.

    Returns
    -------
    shared : list of str
        Names without a slot: records every client of the bundle uses.
    slots : list of dict of str to str
        For each slot, from 0, ``{record name: name in the bundle}``.

    Raises
    ------
    WireFormatError
        For a slot that is not a number, or slots that are not ``0 .. n-1``.

    """
    shared: list[str] = []
    by_slot: dict[int, dict[str, str]] = {}
    for name in names:
        record, separator, slot = name.rpartition(SLOT_SEPARATOR)
        if not separator:
            shared.append(name)
            continue
        if not slot.isdigit():
            raise WireFormatError(f"bundle record {name!r} names no slot number")
        by_slot.setdefault(int(slot), {})[record] = name
    if sorted(by_slot) != list(range(len(by_slot))):
        raise WireFormatError(f"bundle slots {sorted(by_slot)} are not 0 .. n-1")
    return shared, [by_slot[slot] for slot in range(len(by_slot))]


def rule_state_from_record(record: Mapping[str, Any]) -> dict[str, float]:
    """Read what a client's rule kept (a reply's client-rule-state record).

    Raises
    ------
    WireFormatError
        For a value that is not a number.

    """
    return _Reader(record, "client rule state").take_prefixed_numbers("")
