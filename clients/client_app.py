"""The Flower ClientApp: local training and evaluation on one client's data.

Which data a SuperNode trains on comes from its node config (``flower-supernode
--node-config``; the simulation engine sets the first two keys itself):

``partition-id`` (int)
    Train on this share of the dataset, split by the server's ``partition`` settings
    (kind, ``num_clients``, seed), exactly as in simulation.
``num-partitions`` (int, optional)
    Must equal the server's ``partition.num_clients``; a mismatch is an error rather
    than a silently different split.
``data-dir`` (str)
    A folder laid out like the offline mirror (``<data-dir>/<dataset folder>/
    train.parquet``). It replaces the server's ``dataset.data_dir`` on this node.
    Without ``partition-id`` the node trains on *every* row of that train split: its
    own data, with no shared partitioner (the server's ``partition.kind`` is ignored).

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
from fedhyper.client_rules import CLIENT_RULES, ClientRule, RuleInputs, read_settings
from fedhyper.config import DatasetSpec
from fedhyper.data.federated import ClientData, client_data
from fedhyper.data.source import dataset_folder
from fedhyper.errors import ConfigError, DatasetUnavailableError
from fedhyper.models import build_model, trainable_float_keys
from fedhyper.training import evaluate, pick_device, shuffle_generator, train_client
from fedhyper.wire import (
    ARRAYS_RECORD,
    BILEVEL_DESCRIBE_ACTION,
    BILEVEL_GRADIENT_ACTION,
    BILEVEL_HESSIAN_VECTOR_ACTION,
    BILEVEL_LOCAL_DESCENT_ACTION,
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

NUM_PARTITIONS_KEY = "num-partitions"
DATA_DIR_KEY = "data-dir"
RULE_STATE_KEY = "client-rule-state"
"""Node state record holding what the client rule keeps for the client's next round."""


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


def _number(value: object) -> float:
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def local_data(task: ClientTask, node_config: UserConfig) -> ClientData:
    """Return this SuperNode's train and validation data, as its node config says.

    Parameters
    ----------
    task : ClientTask
        The server's task (dataset, partitioning, validation share).
    node_config : UserConfig
        The SuperNode's node config; see the module docstring for the keys.

    Returns
    -------
    ClientData
        A share of the partitioned dataset (``partition-id``), or every train row
        under the node's own ``data-dir``.

    Raises
    ------
    ConfigError
        If the node config names neither key, or a ``num-partitions`` that differs
        from the server's.
    DatasetUnavailableError
        If ``data-dir`` lacks the dataset's train split (no fallback to another
        directory: that would train on data the node does not own).

    """
    node_data_dir = node_config.get(DATA_DIR_KEY)
    if PARTITION_ID_KEY in node_config:
        num_partitions = node_config.get(NUM_PARTITIONS_KEY, task.num_partitions)
        if _integer(num_partitions) != task.num_partitions:
            raise ConfigError(
                f"node-config {NUM_PARTITIONS_KEY}",
                num_partitions,
                f"{task.num_partitions}, the server's partition.num_clients",
            )
        partition_id = _integer(node_config[PARTITION_ID_KEY])
        return task.partition(partition_id, str(node_data_dir) if node_data_dir else None)
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


def _shuffle_identity(context: Context) -> int:
    """Return the partition id, or for a node with its own data its SuperNode id."""
    partition_id = context.node_config.get(PARTITION_ID_KEY)
    return context.node_id if partition_id is None else _integer(partition_id)


def _load_global_model(message: Message, task: ClientTask) -> tuple[torch.nn.Module, torch.device]:
    device = pick_device(task.device)
    model = _model(task.model, task.dataset, task.hidden_size, str(device))
    model.load_state_dict(message.content.array_records[ARRAYS_RECORD].to_torch_state_dict())
    return model, device


def _client_rule(
    message: Message,
    context: Context,
    instruction: TrainInstruction,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> ClientRule:
    """Build this round's client rule, fed Δ_{t−1} when the server sent it."""
    parameters = dict(model.named_parameters())
    keys = trainable_float_keys(model)
    previous = message.content.array_records.get(PREVIOUS_DELTA_RECORD)
    saved = context.state.config_records.get(RULE_STATE_KEY)
    inputs = RuleInputs(
        parameters=[parameters[key] for key in keys],
        optimizer=optimizer,
        base_lr=instruction.lr,
        previous_delta=(
            None if previous is None else [torch.from_numpy(previous[key].numpy()) for key in keys]
        ),
        clients_per_round=instruction.task.clients_per_round,
        saved_state={} if saved is None else {key: _number(v) for key, v in saved.items()},
    )
    settings = read_settings(instruction.client_rule, instruction.client_rule_settings)
    return CLIENT_RULES.get(instruction.client_rule).build(settings, inputs)


def _first_rows(data: TensorDataset, count: int) -> TensorDataset:
    """Return the first ``count`` rows (a client's training rows are in a seeded random order)."""
    return TensorDataset(*(tensor[:count] for tensor in data.tensors))


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train the received global model on this client's data with the LR the server set."""
    instruction = TrainInstruction.from_record(message.content.config_records[CONFIG_RECORD])
    task = instruction.task
    data = local_data(task, context.node_config)
    model, device = _load_global_model(message, task)
    probe = _first_rows(data.train, instruction.probe_examples)
    probe_before = evaluate(model, probe, device=device).loss if len(probe) else None
    result, rule = train_client(
        model,
        data.train,
        task,
        lr=instruction.lr,
        generator=shuffle_generator(
            task.seed, _shuffle_identity(context), instruction.server_round
        ),
        device=device,
        controller_for=partial(_client_rule, message, context, instruction, model),
    )
    assert rule is not None  # controller_for always builds one
    state = rule.state_dict()
    if state:
        context.state[RULE_STATE_KEY] = ConfigRecord(dict(state.items()))
    report = TrainReport.from_lrs(len(data.train), result.mean_loss, result.lrs, rule.report())
    if probe_before is not None:
        probe_after = evaluate(model, probe, device=device).loss
        report = replace(report, probe_loss_before=probe_before, probe_loss_after=probe_after)
    content = RecordDict(
        {
            ARRAYS_RECORD: ArrayRecord(model.state_dict()),
            METRICS_RECORD: MetricRecord(report.to_record()),
        }
    )
    reply = Message(content, reply_to=message)
    return inject_fault(instruction, _shuffle_identity(context), reply)


@app.evaluate()
def evaluate_global(message: Message, context: Context) -> Message:
    """Evaluate the received global model on this client's validation split."""
    task = EvaluateInstruction.from_record(message.content.config_records[CONFIG_RECORD]).task
    data = local_data(task, context.node_config)
    model, device = _load_global_model(message, task)
    result = evaluate(model, data.validation, device=device)
    report = EvaluateReport(result.loss, result.accuracy, result.num_examples)
    metrics = MetricRecord(report.to_record())
    return Message(content=RecordDict({METRICS_RECORD: metrics}), reply_to=message)


@app.query()
def query(message: Message, context: Context) -> Message:
    """Tell the server which partition this node serves: it samples clients by partition.

    The node first checks it has the device the query names.
    """
    pick_device(NodeQuery.from_record(message.content.config_records[CONFIG_RECORD]).device)
    partition = context.node_config.get(PARTITION_ID_KEY)
    info = NodeInfo(None if partition is None else _integer(partition))
    return Message(
        content=RecordDict({METRICS_RECORD: MetricRecord(info.to_record())}), reply_to=message
    )
