"""The Flower ClientApp: local training and evaluation of the clients a node is sent.

A message bundles the clients the server assigned to this node (:mod:`clients.slots`);
each is trained (or evaluated) from the same global model. A client is a partition of
the shared dataset, named in its instruction, or the node's own data. The node config
(``flower-supernode --node-config``; the simulation engine sets ``partition-id`` itself)
says which:

``partition-id`` (int)
    The node holds the shared dataset and trains whichever partitions the server sends
    it, split by the server's ``partition`` settings (kind, ``num_clients``, seed).
``data-dir`` (str)
    A folder laid out like the offline mirror (``<data-dir>/<dataset folder>/
    train.parquet``). It replaces the server's ``dataset.data_dir`` on this node.
    Without ``partition-id`` the node is one client that trains on *every* row of that
    train split: its own data, with no shared partitioner (the server's
    ``partition.kind`` is ignored).

A node needs ``partition-id`` or ``data-dir``. FedMAID's queries
(:mod:`clients.bilevel`) need ``partition-id``.

A node that cannot run the task as configured (a ConfigError: its node config, or a
device it lacks) replies with an error of code ``NODE_CONFIG_ERROR_CODE`` whose reason is
the error's one line, rather than raising: the server stops the run on it, and the
node's log is spared a traceback per message.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache, partial
from pathlib import Path

import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.app.user_config import UserConfig
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from torch.utils.data import TensorDataset

from clients import bilevel
from clients.faults import inject_fault
from clients.slots import serve_slots
from fedhyper.client_rules import CLIENT_RULES, ClientRule, RuleInputs, read_settings
from fedhyper.config import DatasetSpec
from fedhyper.data.federated import ClientData, client_data
from fedhyper.data.source import dataset_folder
from fedhyper.errors import ConfigError, DatasetUnavailableError
from fedhyper.models import build_model, trainable_float_keys
from fedhyper.training import (
    evaluate,
    first_rows,
    flush_denormals,
    loss_before_step,
    pick_device,
    shuffle_generator,
    train_client,
)
from fedhyper.wire import (
    ARRAYS_RECORD,
    BILEVEL_DESCRIBE_ACTION,
    BILEVEL_GRADIENT_ACTION,
    BILEVEL_HESSIAN_VECTOR_ACTION,
    BILEVEL_LOCAL_DESCENT_ACTION,
    CLIENT_RULE_STATE_RECORD,
    CONFIG_RECORD,
    METRICS_RECORD,
    NODE_CONFIG_ERROR_CODE,
    PARTITION_ID_KEY,
    PREVIOUS_DELTA_RECORD,
    ClientTask,
    EvaluateInstruction,
    EvaluateReport,
    NodeInfo,
    NodeQuery,
    TrainInstruction,
    TrainReport,
)

DATA_DIR_KEY = "data-dir"


def reply_config_errors(
    message: Message, context: Context, call_next: ClientAppCallable
) -> Message:
    """Answer a ConfigError with an error reply of one line (a Flower mod).

    Parameters
    ----------
    message : Message
        The server's message.
    context : Context
        The node's context.
    call_next : ClientAppCallable
        The handler of the message.

    Returns
    -------
    Message
        The handler's reply, or an error reply of code ``NODE_CONFIG_ERROR_CODE``.

    """
    try:
        return call_next(message, context)
    except ConfigError as error:
        return Message(Error(NODE_CONFIG_ERROR_CODE, str(error)), reply_to=message)


app = ClientApp(mods=[reply_config_errors])
app.query(BILEVEL_DESCRIBE_ACTION)(bilevel.describe)
app.query(BILEVEL_GRADIENT_ACTION)(bilevel.gradient)
app.query(BILEVEL_HESSIAN_VECTOR_ACTION)(bilevel.hessian_vector)
app.query(BILEVEL_LOCAL_DESCENT_ACTION)(bilevel.local_descent_query)


@lru_cache(maxsize=4)
def _model(name: str, dataset: DatasetSpec, hidden_size: int, device: str) -> torch.nn.Module:
    """One model per worker process, reloaded with each message's weights."""
    return build_model(dataset, name, hidden_size=hidden_size).to(torch.device(device))


def _integer(value: object) -> int:
    if not isinstance(value, int | str):
        raise TypeError(f"expected an integer, got {value!r}")
    return int(value)


def local_data(task: ClientTask, partition: int | None, node_config: UserConfig) -> ClientData:
    """Return a client's train and validation data on this SuperNode.

    Parameters
    ----------
    task : ClientTask
        The server's task (dataset, partitioning, validation share).
    partition : int or None
        The client's partition of the shared dataset; ``None`` for the node's own data.
    node_config : UserConfig
        The SuperNode's node config; see the module docstring for the keys.

    Returns
    -------
    ClientData
        A share of the partitioned dataset (read from the node's ``data-dir`` when it
        names one), or every train row under the node's own ``data-dir``.

    Raises
    ------
    ConfigError
        For the node's own data on a node whose config names no ``data-dir``.
    DatasetUnavailableError
        If ``data-dir`` lacks the dataset's train split (no fallback to another
        directory: that would train on data the node does not own).

    """
    node_data_dir = node_config.get(DATA_DIR_KEY)
    if partition is not None:
        return task.partition(partition, str(node_data_dir) if node_data_dir else None)
    if node_data_dir is None:
        raise ConfigError(
            "node-config", dict(node_config), f"{PARTITION_ID_KEY}=<int> or {DATA_DIR_KEY}=<path>"
        )
    root = Path(str(node_data_dir)).expanduser()
    train_file = dataset_folder(task.dataset, root) / "train.parquet"
    if not train_file.is_file():
        raise DatasetUnavailableError(
            f"node-config {DATA_DIR_KEY}={node_data_dir!r} has no {train_file.relative_to(root)}"
        )
    # One IID partition of one client is the whole split, in a seeded order.
    return client_data(
        task.dataset,
        0,
        data_dir=str(root),
        cache_dir=task.cache_dir or None,
        kind="iid",
        num_clients=1,
        seed=task.seed,
        validation_fraction=task.validation_fraction,
    )


def client_identity(partition: int | None, context: Context) -> int:
    """Return the partition id, or for a node with its own data its SuperNode id.

    It seeds the client's shuffles and fault draws, so they follow the client whichever
    node trains it.
    """
    return context.node_id if partition is None else partition


def _load_global_model(
    content: RecordDict, task: ClientTask
) -> tuple[torch.nn.Module, torch.device]:
    flush_denormals(task.flush_denormals)
    device = pick_device(task.device)
    model = _model(task.model, task.dataset, task.hidden_size, str(device))
    model.load_state_dict(content.array_records[ARRAYS_RECORD].to_torch_state_dict())
    return model, device


def _client_rule(
    content: RecordDict,
    instruction: TrainInstruction,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> ClientRule:
    """Build this round's client rule, fed Δ_{t−1} when the server sent it."""
    parameters = dict(model.named_parameters())
    keys = trainable_float_keys(model)
    previous = content.array_records.get(PREVIOUS_DELTA_RECORD)
    inputs = RuleInputs(
        parameters=[parameters[key] for key in keys],
        optimizer=optimizer,
        base_lr=instruction.lr,
        previous_delta=(
            None if previous is None else [torch.from_numpy(previous[key].numpy()) for key in keys]
        ),
        clients_per_round=instruction.task.clients_per_round,
        saved_state=instruction.client_rule_state,
    )
    settings = read_settings(instruction.client_rule, instruction.client_rule_settings)
    return CLIENT_RULES.get(instruction.client_rule).build(settings, inputs)


def _probe_previous(
    content: RecordDict,
    instruction: TrainInstruction,
    model: torch.nn.Module,
    probe: TensorDataset,
    device: torch.device,
) -> float | None:
    """Return the probe loss of the previous global model, when asked and a step came."""
    step = content.array_records.get(PREVIOUS_DELTA_RECORD)
    if not (instruction.probe_previous and len(probe) and step is not None):
        return None
    return loss_before_step(model, step.to_torch_state_dict(), probe, device=device)


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train every client of the message, each from the received global model."""
    return serve_slots(message, context, train_one)


def train_one(content: RecordDict, context: Context) -> RecordDict:
    """Train the received global model on one client's data with the LR the server set."""
    instruction = TrainInstruction.from_record(content.config_records[CONFIG_RECORD])
    task = instruction.task
    identity = client_identity(instruction.partition, context)
    data = local_data(task, instruction.partition, context.node_config)
    model, device = _load_global_model(content, task)
    probe = first_rows(data.train, instruction.probe_examples)
    probe_before = evaluate(model, probe, device=device).loss if len(probe) else None
    probe_previous = _probe_previous(content, instruction, model, probe, device)
    result, rule = train_client(
        model,
        data.train,
        task,
        lr=instruction.lr,
        generator=shuffle_generator(task.seed, identity, instruction.server_round),
        device=device,
        controller_for=partial(_client_rule, content, instruction, model),
    )
    assert rule is not None  # controller_for always builds one
    report = TrainReport.from_lrs(len(data.train), result.mean_loss, result.lrs, rule.report())
    if probe_before is not None:
        probe_after = evaluate(model, probe, device=device).loss
        report = replace(
            report,
            probe_loss_before=probe_before,
            probe_loss_after=probe_after,
            probe_loss_previous=probe_previous,
        )
    reply = RecordDict(
        {
            ARRAYS_RECORD: ArrayRecord(model.state_dict()),
            METRICS_RECORD: MetricRecord(report.to_record()),
        }
    )
    state = rule.state_dict()
    if state:
        reply[CLIENT_RULE_STATE_RECORD] = ConfigRecord(dict(state.items()))
    return inject_fault(instruction, identity, reply)


@app.evaluate()
def evaluate_global(message: Message, context: Context) -> Message:
    """Evaluate the received global model on each client's validation split."""
    return serve_slots(message, context, evaluate_one)


def evaluate_one(content: RecordDict, context: Context) -> RecordDict:
    """Evaluate the received global model on one client's validation split."""
    instruction = EvaluateInstruction.from_record(content.config_records[CONFIG_RECORD])
    data = local_data(instruction.task, instruction.partition, context.node_config)
    model, device = _load_global_model(content, instruction.task)
    result = evaluate(model, data.validation, device=device)
    report = EvaluateReport(result.loss, result.accuracy, result.num_examples)
    return RecordDict({METRICS_RECORD: MetricRecord(report.to_record())})


@app.query()
def query(message: Message, context: Context) -> Message:
    """Tell the server whether this node trains partitions of the shared dataset.

    The node first checks it has the device the query names.
    """
    pick_device(NodeQuery.from_record(message.content.config_records[CONFIG_RECORD]).device)
    partition = context.node_config.get(PARTITION_ID_KEY)
    info = NodeInfo(None if partition is None else _integer(partition))
    return Message(
        content=RecordDict({METRICS_RECORD: MetricRecord(info.to_record())}), reply_to=message
    )
