"""The pure-compute floor of an experiment: its rounds as plain PyTorch, no Flower, no Ray.

The sampled clients' local training, with data decoded and partitioned before the clock
starts, the same sampled clients (:func:`fedhyper.sampling.sample_clients`) and the same
training call as the ClientApp (:func:`fedhyper.training.train_client`, shuffled by
:func:`fedhyper.training.shuffle_generator`), then the same server update (Flower's
weighted average, then the strategy's pure rule through :func:`fedhyper.rules.apply_rule`)
and the same centralised evaluation.

With one worker the clients train one after the other in this process (the sequential
figure). With ``workers`` > 1 they train in that many forked worker processes, each on
its CPU share of torch threads, fed one client at a time from a shared queue, so the
fastest free worker takes the next client: the same work on the same number of worker
processes as the simulation, at the least a process pool costs (the global model goes
to each client and its weights come back, pickled through a pipe).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from torch.utils.data import TensorDataset

from fedhyper.config import ExperimentConfig
from fedhyper.data.federated import test_data
from fedhyper.models import trainable_float_keys
from fedhyper.rules import FedExP, Plain, ServerRule, apply_rule
from fedhyper.sampling import Purpose, sample_clients
from fedhyper.training import (
    evaluate,
    flush_denormals,
    pick_device,
    shuffle_generator,
    train_client,
)
from fedhyper.wire import ARRAYS_RECORD, METRICS_RECORD, ClientTask

__all__ = ["floor", "server_rule_for"]

WEIGHT_KEY = "weight"
"""Metric of the floor's client records that the average is weighted by."""

State = dict[str, torch.Tensor]


def server_rule_for(config: ExperimentConfig, keys: Sequence[str]) -> ServerRule:
    """Return the server rule the strategy applies to the averaged update.

    FedAvg is :class:`~fedhyper.rules.Plain`; a method that steps by a server rule gets
    the rule :func:`strategies.factory.server_rule` builds for it.
    """
    if config.strategy.name == "fedavg":
        return Plain()
    from fedhyper.methods import method_of
    from strategies.factory import server_rule

    method = method_of(config)
    # FedExP's rule also needs every client's own update.
    if method.server_rule is None or method.name == "fedexp":
        raise SystemExit(
            f"the floor knows fedavg and rule strategies but FedExP, not {method.name}"
        )
    rule = server_rule(config)
    assert not isinstance(rule, FedExP)
    return rule


@dataclass
class _Clients:
    """What every worker holds: the task, the clients' data and a model to reuse."""

    config: ExperimentConfig
    task: ClientTask
    device: torch.device
    data: dict[int, TensorDataset]
    model: torch.nn.Module


_CLIENTS: list[_Clients] = []
"""The clients of the floor being run, set before the workers fork (they inherit it)."""


def _set_threads(threads: int) -> None:
    torch.set_num_threads(threads)


def _train(job: tuple[int, int, State]) -> tuple[State, int, float]:
    """Train one client from the global state; return its weights, weight and seconds."""
    partition, server_round, global_state = job
    clients = _CLIENTS[0]
    start = time.perf_counter()
    clients.model.load_state_dict(global_state)
    train_client(
        clients.model,
        clients.data[partition],
        clients.task,
        lr=clients.config.client.lr,
        generator=shuffle_generator(clients.task.seed, partition, server_round),
        device=clients.device,
    )
    weight = len(clients.data[partition]) if clients.config.strategy.weighted else 1
    state = {key: value.detach().clone() for key, value in clients.model.state_dict().items()}
    return state, weight, time.perf_counter() - start


def floor(config: ExperimentConfig, workers: int = 1) -> dict[str, Any]:
    """Run the experiment's rounds as plain PyTorch and time them.

    Parameters
    ----------
    config : ExperimentConfig
        The composed experiment.
    workers : int
        Worker processes training clients at once; 1 trains them in this process, as
        does any number on a GPU.

    Returns
    -------
    dict
        ``round_s`` (seconds of each round), ``train_s``, ``server_s`` and ``eval_s``
        (each round's client training, summed over clients; aggregation and server
        rule; centralised evaluation), ``preload_s`` (decoding and partitioning the
        sampled clients' data before the clock starts), ``accuracy`` (last round),
        ``workers`` and ``torch_threads`` (per worker).

    """
    from strategies.runner import initial_model

    task = ClientTask.from_experiment(config)
    # As the ClientApp and the central evaluation do; forked workers inherit the flags.
    flush_denormals(task.flush_denormals)
    device = pick_device(task.device)
    # CUDA does not survive a fork: on a GPU the floor trains in this process.
    workers = 1 if device.type == "cuda" else workers
    # A Ray worker with num_cpus=n runs torch on n threads (Ray sets OMP_NUM_THREADS);
    # the floor's workers train on as many. More threads than free cores makes a busy
    # machine's OpenMP spin-waits cost several times the compute.
    threads = max(1, int(config.simulation.num_cpus_per_client))
    torch.set_num_threads(threads)
    count = config.strategy.clients_per_round
    schedule = [
        sample_clients(
            config.seed, server_round, 0, Purpose.TRAIN, config.partition.num_clients, count
        )
        for server_round in range(1, config.num_rounds + 1)
    ]
    start = time.perf_counter()
    data: dict[int, TensorDataset] = {}
    for partition in sorted({p for sampled in schedule for p in sampled}):
        train = task.partition(partition).train
        data[partition] = TensorDataset(*(tensor.to(device) for tensor in train.tensors))
    test = test_data(config.dataset)
    server_model = initial_model(config).to(device)
    keys = trainable_float_keys(server_model)
    rule = server_rule_for(config, keys)
    _CLIENTS[:] = [_Clients(config, task, device, data, initial_model(config).to(device))]
    # On the CPU, where the Flower server keeps the global model.
    global_state = {key: value.cpu().clone() for key, value in server_model.state_dict().items()}
    pool = (
        multiprocessing.get_context("fork").Pool(workers, _set_threads, (threads,))
        if workers > 1
        else None
    )
    preload_s = time.perf_counter() - start

    figures: dict[str, list[float]] = {"round_s": [], "train_s": [], "server_s": [], "eval_s": []}
    accuracy = float("nan")
    try:
        for server_round, sampled in enumerate(schedule, start=1):
            start = time.perf_counter()
            jobs = [(partition, server_round, global_state) for partition in sampled]
            trained = pool.map(_train, jobs, chunksize=1) if pool else [_train(j) for j in jobs]
            stepped = time.perf_counter()
            replies = [
                RecordDict(
                    {
                        ARRAYS_RECORD: ArrayRecord(state),
                        METRICS_RECORD: MetricRecord({WEIGHT_KEY: weight}),
                    }
                )
                for state, weight, _ in trained
            ]
            average = aggregate_arrayrecords(replies, WEIGHT_KEY).to_torch_state_dict()
            global_state, _, _ = apply_rule(rule, global_state, average, keys)
            server_model.load_state_dict(global_state)
            aggregated = time.perf_counter()
            accuracy = evaluate(server_model, test, device=device).accuracy
            if device.type == "cuda":
                torch.cuda.synchronize()
            end = time.perf_counter()
            figures["round_s"].append(end - start)
            figures["train_s"].append(sum(seconds for _, _, seconds in trained))
            figures["server_s"].append(aggregated - stepped)
            figures["eval_s"].append(end - aggregated)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        _CLIENTS.clear()
    return {
        **figures,
        "preload_s": preload_s,
        "accuracy": accuracy,
        "workers": workers,
        "torch_threads": threads,
    }
