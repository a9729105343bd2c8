"""The Flower ClientApp: local training and evaluation on one client's partition."""

from __future__ import annotations

import statistics
from functools import lru_cache

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedhyper.batching import TensorBatches
from fedhyper.data.federated import ClientData, client_data
from fedhyper.data.registry import DATASETS
from fedhyper.models import build_model, trainable_float_keys
from fedhyper.rules import HypergradientLocalLR
from fedhyper.task import ARRAYS_KEY, PREVIOUS_DELTA_KEY, ClientTask
from fedhyper.training import evaluate, make_optimizer, pick_device, train_local

PARTITION_ID_KEY = "partition-id"
CL_STATE_KEY = "fedhyper-cl"
"""Node state record that carries the CL multiplier between rounds (``cl_carry``)."""

app = ClientApp()


@lru_cache(maxsize=4)
def _model(name: str, dataset: str, hidden_size: int, device: str) -> torch.nn.Module:
    """One model per worker process, reloaded with each message's weights."""
    spec = DATASETS[dataset]
    model = build_model(
        name, num_classes=spec.num_classes, in_channels=spec.input_shape[0], hidden_size=hidden_size
    )
    return model.to(torch.device(device))


def _integer(value: object) -> int:
    if not isinstance(value, int | str):
        raise TypeError(f"expected an integer, got {value!r}")
    return int(value)


def _number(value: object) -> float:
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _data(task: ClientTask, partition_id: int) -> ClientData:
    return client_data(
        task.dataset,
        partition_id,
        data_dir=task.data_dir or None,
        cache_dir=task.cache_dir or None,
        kind=task.partition_kind,
        num_clients=task.num_partitions,
        alpha=task.alpha,
        classes_per_client=task.classes_per_client,
        seed=task.seed,
        validation_fraction=task.validation_fraction,
    )


def _load_global_model(message: Message, task: ClientTask) -> tuple[torch.nn.Module, torch.device]:
    device = pick_device(task.device)
    model = _model(task.model, task.dataset, task.hidden_size, str(device))
    model.load_state_dict(message.content.array_records[ARRAYS_KEY].to_torch_state_dict())
    return model, device


def _hypergradient_controller(
    message: Message,
    context: Context,
    task: ClientTask,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> HypergradientLocalLR:
    """FedHyper-CL for this round, fed the server's unscaled Δ_{t−1} when it sent one."""
    parameters = dict(model.named_parameters())
    keys = trainable_float_keys(model)
    previous = message.content.array_records.get(PREVIOUS_DELTA_KEY)
    global_delta = (
        None if previous is None else [torch.from_numpy(previous[key].numpy()) for key in keys]
    )
    carried = context.state.config_records.get(CL_STATE_KEY) if task.cl_carry else None
    multiplier = _number(carried["multiplier"]) if carried is not None else 1.0
    return HypergradientLocalLR(
        [parameters[key] for key in keys],
        optimizer,
        base_lr=task.lr,
        global_delta=global_delta,
        coupling=task.cl_coupling,
        skip_first_batch=task.cl_skip_first_batch,
        multiplier=multiplier,
        bounds=(task.lr_min_factor, task.lr_max_factor),
    )


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train the received global model on this client's data with the LR the server set."""
    task = ClientTask.from_mapping(message.content.config_records["config"])
    partition_id = _integer(context.node_config[PARTITION_ID_KEY])
    server_round = _integer(message.content.config_records["config"]["server-round"])
    data = _data(task, partition_id)
    model, device = _load_global_model(message, task)
    optimizer = make_optimizer(
        task.optimizer, model.parameters(), task.lr, task.momentum, task.weight_decay
    )
    # A distinct, reproducible shuffle per (seed, client, round).
    generator = torch.Generator().manual_seed(hash((task.seed, partition_id, server_round)))
    controller = (
        _hypergradient_controller(message, context, task, model, optimizer)
        if task.client_rule == "hypergradient"
        else None
    )
    result = train_local(
        model,
        TensorBatches(data.train, task.batch_size, generator),
        optimizer,
        epochs=task.local_epochs,
        device=device,
        max_steps=task.max_steps,
        controller=controller,
    )
    lrs = result.lrs
    metrics = MetricRecord(
        {
            "train-loss": result.mean_loss,
            "num-examples": len(data.train),
            "uniform-weight": 1,
            "steps": result.steps,
            "lr-first": lrs[0],
            "lr-last": lrs[-1],
            "lr-mean": statistics.fmean(lrs),
            "lr-min": min(lrs),
            "lr-max": max(lrs),
        }
    )
    if controller is not None:
        stats = controller.stats()
        metrics["hypergradient-x-mean"] = stats["x_mean"]
        metrics["hypergradient-y-mean"] = stats["y_mean"]
        metrics["lr-multiplier"] = stats["multiplier"]
        context.state[CL_STATE_KEY] = ConfigRecord({"multiplier": stats["multiplier"]})
    content = RecordDict({ARRAYS_KEY: ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=message)


@app.evaluate()
def evaluate_global(message: Message, context: Context) -> Message:
    """Evaluate the received global model on this client's validation split."""
    task = ClientTask.from_mapping(message.content.config_records["config"])
    data = _data(task, _integer(context.node_config[PARTITION_ID_KEY]))
    model, device = _load_global_model(message, task)
    result = evaluate(model, data.validation, device=device)
    metrics = MetricRecord(
        {
            "eval-loss": result.loss,
            "eval-accuracy": result.accuracy,
            "num-examples": result.num_examples,
            "uniform-weight": 1,
        }
    )
    return Message(content=RecordDict({"metrics": metrics}), reply_to=message)
