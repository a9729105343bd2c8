"""The server's round loop: any Flower strategy, plus history, evaluation and display.

It follows :meth:`flwr.serverapp.strategy.Strategy.start` (configure, send, aggregate,
evaluate) and adds what an experiment needs around it: clients sampled by partition as a
pure function of the seed and round, screening of every reply before aggregation, retries
of rounds with too few usable replies, per-client learning-rate statistics, centralised
evaluation, a flushed per-round history, checkpoints and resumption, W&B and the live
display.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore.run import Run
from omegaconf import OmegaConf

from fedhyper.atomic import atomic_write, atomic_write_text
from fedhyper.checkpoint import (
    CONFIG_FILE,
    Checkpoint,
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from fedhyper.config import ExperimentConfig
from fedhyper.data.federated import test_data
from fedhyper.errors import ConfigError, FedHyperError
from fedhyper.faults import FaultPlan
from fedhyper.history import HistoryWriter, RunSummary, summarise
from fedhyper.models import build_model, trainable_float_keys
from fedhyper.preflight import check_run_dir
from fedhyper.progress import RoundProgress
from fedhyper.sampling import Purpose, sample_clients
from fedhyper.task import ATTEMPT_KEY, PARTITION_ID_KEY, ClientTask
from fedhyper.tracking import Tracker
from fedhyper.training import evaluate, pick_device, set_seed
from strategies.factory import build_strategy, weight_key
from strategies.screening import ArraySpec, array_spec, screen_replies
from strategies.state import load_strategy_state, strategy_state

LOGGER = logging.getLogger("fedhyper")

MODEL_FILE = "model.pt"


class RoundFailedError(FedHyperError):
    """A round got too few usable replies, retries included; the run stops."""


class FederationError(FedHyperError):
    """The SuperNodes cannot be told apart by partition, so sampling is not reproducible."""


@dataclass
class CentralEvaluator:
    """Evaluate global arrays on the centralised test set, with one reusable model."""

    model: torch.nn.Module
    dataset: torch.utils.data.TensorDataset
    device: torch.device

    def __call__(self, arrays: ArrayRecord) -> tuple[float, float]:
        """Return ``(loss, accuracy)`` of ``arrays`` on the test set."""
        self.model.load_state_dict(arrays.to_torch_state_dict())
        result = evaluate(self.model, self.dataset, device=self.device)
        return result.loss, result.accuracy


def client_lr_stats(replies: Iterable[Message]) -> dict[str, float]:
    """Summarise the learning rates the clients report having trained with.

    Parameters
    ----------
    replies : iterable of Message
        Training replies; failed ones are skipped.

    Returns
    -------
    dict
        ``client_lr_mean``, ``client_lr_min`` and ``client_lr_max`` over all clients'
        per-step trajectories (mean of their means; min of mins; max of maxes).

    """
    metrics = [
        next(iter(reply.content.metric_records.values()))
        for reply in replies
        if not reply.has_error()
    ]
    if not metrics:
        return {
            "client_lr_mean": float("nan"),
            "client_lr_min": float("nan"),
            "client_lr_max": float("nan"),
        }
    return {
        "client_lr_mean": statistics.fmean(_metric(m, "lr-mean") for m in metrics),
        "client_lr_min": min(_metric(m, "lr-min") for m in metrics),
        "client_lr_max": max(_metric(m, "lr-max") for m in metrics),
    }


def _metric(record: MetricRecord | None, key: str, default: float = math.nan) -> float:
    value = default if record is None else record.get(key, default)
    if not isinstance(value, int | float):
        raise TypeError(f"metric {key!r} must be a scalar, got {value!r}")
    return float(value)


def initial_model(config: ExperimentConfig) -> torch.nn.Module:
    """Build the experiment's model with seeded initial weights."""
    set_seed(config.seed)
    return build_model(
        config.dataset.spec(), config.model.name, hidden_size=config.model.hidden_size
    )


def wait_for_federation(grid: Grid, config: ExperimentConfig) -> None:
    """Wait until one SuperNode per partition has connected; fail clearly otherwise.

    SuperNodes register asynchronously (also in simulation), so the count is polled
    for up to ``simulation.node_wait_s`` seconds.
    """
    expected = config.partition.num_clients
    deadline = time.monotonic() + config.simulation.node_wait_s
    while (connected := len(list(grid.get_node_ids()))) < expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if connected != expected:
        raise ConfigError(
            "partition.num_clients",
            expected,
            f"{connected}, the number of SuperNodes connected after "
            f"{config.simulation.node_wait_s:g} s (num-supernodes of the federation)",
        )


@dataclass(frozen=True)
class ClientDirectory:
    """The federation's SuperNodes in a stable order: by partition id.

    Simulation gives every node a fresh random id each time it starts, but the same
    partition; ordering by partition makes "the k-th client" mean the same client in a
    run and in its resumption. Nodes without a partition (deployments where each node
    brings its own data) follow, ordered by node id.

    Attributes
    ----------
    node_ids : list of int
        Node ids in client order.
    partitions : dict of int to int or None
        Each node's partition.

    """

    node_ids: list[int]
    partitions: dict[int, int | None]

    def sample(
        self, config: ExperimentConfig, server_round: int, attempt: int, purpose: Purpose
    ) -> list[int]:
        """Return the node ids sampled for one attempt of a round, in client order."""
        count = (
            config.strategy.clients_per_round
            if purpose is Purpose.TRAIN
            else config.strategy.evaluate_clients_per_round
        )
        positions = sample_clients(
            config.seed, server_round, attempt, purpose, len(self.node_ids), count
        )
        return [self.node_ids[position] for position in positions]

    def in_order(self, replies: Iterable[Message]) -> list[Message]:
        """Sort replies into client order: arrival order would make float sums vary."""
        position = {node_id: index for index, node_id in enumerate(self.node_ids)}
        return sorted(replies, key=lambda reply: position[reply.metadata.src_node_id])

    def describe(self, node_id: int) -> str:
        """Name a node for log lines: its partition when it has one."""
        partition = self.partitions.get(node_id)
        return f"partition {partition}" if partition is not None else f"node {node_id}"


def discover_clients(grid: Grid, config: ExperimentConfig) -> ClientDirectory:
    """Ask every SuperNode which partition it serves.

    Parameters
    ----------
    grid : Grid
        The connected federation.
    config : ExperimentConfig
        The experiment (number of clients, timeouts).

    Returns
    -------
    ClientDirectory
        The nodes in client order.

    Raises
    ------
    FederationError
        If a node does not answer or two nodes claim one partition.

    """
    wait_for_federation(grid, config)
    node_ids = sorted(grid.get_node_ids())
    queries = [
        Message(RecordDict(), dst_node_id=node_id, message_type=MessageType.QUERY)
        for node_id in node_ids
    ]
    # Simulation starts its workers on the first message: allow start-up time, not just
    # a round's.
    timeout = max(config.simulation.node_wait_s, config.simulation.round_timeout_s)
    replies = list(grid.send_and_receive(queries, timeout=timeout))
    answered = {reply.metadata.src_node_id: reply for reply in replies}
    silent = [node_id for node_id in node_ids if node_id not in answered]
    errors = [reply for reply in replies if reply.has_error()]
    if silent or errors:
        reason = f": {errors[0].error.reason}" if errors else ""
        raise FederationError(
            f"{len(silent) + len(errors)} of {len(node_ids)} SuperNodes did not say which "
            f"partition they serve within {timeout:g} s (the longer of "
            f"simulation.node_wait_s and simulation.round_timeout_s){reason}"
        )
    partitions: dict[int, int | None] = {}
    for node_id, reply in answered.items():
        metrics = next(iter(reply.content.metric_records.values()), MetricRecord())
        value = metrics.get(PARTITION_ID_KEY)
        if value is not None and not isinstance(value, int):
            raise FederationError(f"node {node_id} names partition {value!r}, not an integer")
        partitions[node_id] = value
    claimed = [p for p in partitions.values() if p is not None]
    if len(set(claimed)) != len(claimed):
        twice = sorted({p for p in claimed if claimed.count(p) > 1})
        raise FederationError(
            f"partitions {twice[:5]} are served by more than one SuperNode; give each "
            f"node its own node-config {PARTITION_ID_KEY}"
        )
    ordered = sorted(
        node_ids,
        key=lambda n: (0, partitions[n], n) if partitions[n] is not None else (1, 0, n),
    )
    return ClientDirectory(node_ids=ordered, partitions=partitions)


class SampledGrid(Grid):
    """The grid as a strategy sees it while configuring a round: only the sampled nodes.

    Flower's strategies sample with ``random.sample(grid.get_node_ids(), k)``; offered
    exactly ``k`` nodes (their ``min_available_nodes`` is 0), they take all of them, so
    the runner decides who takes part. Everything else goes to the real grid.
    """

    def __init__(self, grid: Grid, node_ids: Sequence[int]) -> None:
        self._grid = grid
        self._node_ids = list(node_ids)

    def get_node_ids(self) -> Iterable[int]:
        """Return the sampled nodes."""
        return list(self._node_ids)

    def set_run(self, run: Run) -> None:
        """Delegate to the real grid."""
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        """The real grid's run."""
        return self._grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        """Delegate to the real grid."""
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Delegate to the real grid."""
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Delegate to the real grid."""
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Delegate to the real grid."""
        return self._grid.send_and_receive(messages, timeout=timeout)


def conform(arrays: ArrayRecord, spec: ArraySpec) -> ArrayRecord:
    """Give aggregated arrays the model's dtypes and key order.

    Flower's FedAvg averages integer counters into floats, and FedAdam, FedYogi and
    FedAdagrad return float64 weights; clients train, and the screening checks replies,
    in the model's own dtypes.
    """
    return ArrayRecord(
        {
            key: Array(arrays[key].numpy().astype(dtype, copy=False))
            for key, (_, dtype) in spec.items()
        }
    )


def required_replies(config: ExperimentConfig, sampled: int) -> int:
    """Usable replies a round needs: ``min_reply_fraction`` of those sampled, at least 1."""
    # The tolerance keeps 0.3 * 10 from rounding up to 4.
    return max(1, math.ceil(config.reliability.min_reply_fraction * sampled - 1e-9))


@dataclass
class _Run:
    """Everything the rounds of one run share."""

    grid: Grid
    config: ExperimentConfig
    strategy: Strategy
    directory: ClientDirectory
    evaluator: CentralEvaluator
    trainable_keys: list[str]
    spec: ArraySpec
    task: dict[str, Any]
    faults: dict[str, Any]

    def train(
        self, server_round: int, arrays: ArrayRecord
    ) -> tuple[ArrayRecord, MetricRecord | None, list[Message], dict[str, int]]:
        """Train until enough usable replies arrive, then aggregate them.

        A failed attempt leaves the strategy untouched (it never sees those replies), so
        a skipped round changes no learning rate, accumulator or Δ_{t−1}.
        """
        config = self.config
        counts = {"failures": 0, "timeouts": 0, "rejected": 0, "retries": 0}
        for attempt in range(config.reliability.round_retries + 1):
            counts["retries"] = attempt
            nodes = self.directory.sample(config, server_round, attempt, Purpose.TRAIN)
            record = ConfigRecord({**self.task, **self.faults, ATTEMPT_KEY: attempt})
            messages = list(
                self.strategy.configure_train(
                    server_round, arrays, record, SampledGrid(self.grid, nodes)
                )
            )
            replies = self.directory.in_order(
                self.grid.send_and_receive(messages, timeout=config.simulation.round_timeout_s)
            )
            screened = screen_replies(
                replies,
                self.spec,
                arrays,
                self.trainable_keys,
                weight_key(config),
                config.reliability.max_update_norm_ratio,
            )
            timeouts = len(messages) - len(replies)
            counts["timeouts"] += timeouts
            counts["failures"] += timeouts + len(screened.failed)
            counts["rejected"] += len(screened.rejected)
            self._log_problems(server_round, screened.failed, screened.rejected, timeouts)
            needed = required_replies(config, len(messages))
            if len(screened.accepted) >= needed:
                new_arrays, metrics = self.strategy.aggregate_train(server_round, screened.accepted)
                arrays = arrays if new_arrays is None else conform(new_arrays, self.spec)
                return arrays, metrics, screened.accepted, counts
            LOGGER.warning(
                "round %d, attempt %d: %d usable replies of %d sampled, %d needed "
                "(reliability.min_reply_fraction=%g)",
                server_round,
                attempt + 1,
                len(screened.accepted),
                len(messages),
                needed,
                config.reliability.min_reply_fraction,
            )
        reason = f"; a client error: {screened.failed[0].error.reason}" if screened.failed else ""
        raise RoundFailedError(
            f"round {server_round} stopped the run: fewer than {needed} of "
            f"{len(messages)} sampled clients sent a usable update, in each of "
            f"{config.reliability.round_retries + 1} attempts (reliability.round_retries="
            f"{config.reliability.round_retries}){reason}"
        )

    def _log_problems(
        self,
        server_round: int,
        failed: list[Message],
        rejected: list[tuple[Message, str]],
        timeouts: int,
    ) -> None:
        for reply in failed:
            LOGGER.warning(
                "round %d: %s failed: %s",
                server_round,
                self.directory.describe(reply.metadata.src_node_id),
                reply.error.reason,
            )
        for reply, reason in rejected:
            LOGGER.warning(
                "round %d: rejected the update of %s: %s",
                server_round,
                self.directory.describe(reply.metadata.src_node_id),
                reason,
            )
        if timeouts:
            LOGGER.warning(
                "round %d: %d clients did not reply within simulation.round_timeout_s=%g s",
                server_round,
                timeouts,
                self.config.simulation.round_timeout_s,
            )

    def round(self, server_round: int, arrays: ArrayRecord) -> tuple[ArrayRecord, dict[str, Any]]:
        """One round: train, aggregate, federated and centralised evaluation."""
        arrays, train_metrics, accepted, counts = self.train(server_round, arrays)
        nodes = self.directory.sample(self.config, server_round, 0, Purpose.EVALUATE)
        eval_messages = self.strategy.configure_evaluate(
            server_round, arrays, ConfigRecord(self.task), SampledGrid(self.grid, nodes)
        )
        eval_replies = self.directory.in_order(
            self.grid.send_and_receive(
                eval_messages, timeout=self.config.simulation.round_timeout_s
            )
        )
        eval_metrics = self.strategy.aggregate_evaluate(server_round, eval_replies)
        loss, accuracy = self.evaluator(arrays)
        row: dict[str, Any] = {
            "round": server_round,
            "accuracy": accuracy,
            "loss": loss,
            "train_loss": _metric(train_metrics, "train-loss"),
            "federated_accuracy": _metric(eval_metrics, "eval-accuracy"),
            "federated_loss": _metric(eval_metrics, "eval-loss"),
            "global_lr": _metric(train_metrics, "global-lr", 1.0),
            "hypergradient": _metric(train_metrics, "hypergradient", 0.0),
            **client_lr_stats(accepted),
            "scheduled_client_lr": _metric(train_metrics, "scheduled-client-lr"),
            "clients": len(accepted),
            **counts,
        }
        return arrays, row


def run_federation(grid: Grid, config: ExperimentConfig, run_dir: Path) -> RunSummary:
    """Run (or, with ``config.resume``, continue) an experiment, writing into ``run_dir``.

    Parameters
    ----------
    grid : Grid
        Flower's grid of connected SuperNodes.
    config : ExperimentConfig
        A validated experiment whose data the caller has checked
        (:func:`fedhyper.preflight.check_data`); when resuming, the one
        :func:`fedhyper.checkpoint.resume_experiment` returned.
    run_dir : Path
        Output directory (created if missing); the checkpoint is read from it.

    Returns
    -------
    RunSummary
        Final and best accuracy, rounds to target and wall time.

    Raises
    ------
    ConfigError
        For a checkpoint that does not fit the experiment.
    RoundFailedError
        If a round gets too few usable replies in all its attempts.

    """
    run_dir.mkdir(parents=True, exist_ok=True)
    check_run_dir(config, run_dir)
    checkpoint = load_checkpoint(run_dir) if config.resume else None
    atomic_write_text(
        run_dir / CONFIG_FILE, OmegaConf.to_yaml(OmegaConf.structured(replace(config, resume=None)))
    )
    directory = discover_clients(grid, config)
    model = initial_model(config)
    arrays = ArrayRecord(model.state_dict())
    trainable_keys = trainable_float_keys(model)
    strategy = build_strategy(config, trainable_keys)
    rows: list[dict[str, Any]] = []
    if checkpoint is not None:
        arrays = _restore(checkpoint, strategy, model, run_dir)
        rows = checkpoint.history
        if config.strategy.cl_carry:
            LOGGER.warning(
                "resuming with strategy.cl_carry: the clients' CL multipliers live on the "
                "clients and restart at 1"
            )
    run = _Run(
        grid=grid,
        config=config,
        strategy=strategy,
        directory=directory,
        evaluator=CentralEvaluator(model, test_data(config.dataset), pick_device("auto")),
        trainable_keys=trainable_keys,
        spec=array_spec(ArrayRecord(model.state_dict())),
        task=ClientTask.from_experiment(config).to_mapping(),
        faults=FaultPlan.from_experiment(config).to_mapping(),
    )
    history = HistoryWriter(run_dir, rows)
    tracker = Tracker(config, run_dir)
    every = config.reliability.checkpoint_every
    first_round = len(rows) + 1
    wall_offset = float(rows[-1]["wall_s"]) if rows else 0.0
    start = time.perf_counter()
    with RoundProgress(
        config.strategy.name, config.num_rounds, enabled=config.logging.progress
    ) as progress:
        for server_round in range(first_round, config.num_rounds + 1):
            arrays, row = run.round(server_round, arrays)
            row["wall_s"] = wall_offset + time.perf_counter() - start
            history.append(row)
            tracker.log(row)
            progress.advance(row, server_round)
            if every and (server_round % every == 0 or server_round == config.num_rounds):
                save_checkpoint(
                    run_dir,
                    Checkpoint(
                        server_round=server_round,
                        arrays=dict(arrays.to_torch_state_dict()),
                        strategy=strategy_state(strategy),
                        rng=capture_rng(),
                        history=history.rows,
                    ),
                )
    tracker.finish()

    state = arrays.to_torch_state_dict()
    atomic_write(run_dir / MODEL_FILE, lambda handle: torch.save(state, handle))
    summary = summarise(config.strategy.name, history.rows, config.target_accuracy)
    summary.save(run_dir)
    return summary


def _restore(
    checkpoint: Checkpoint, strategy: Strategy, model: torch.nn.Module, run_dir: Path
) -> ArrayRecord:
    """Put the strategy and the generators back where the checkpoint left them."""
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in checkpoint.arrays.items()}
    if found != expected or len(checkpoint.history) != checkpoint.server_round:
        raise ConfigError(
            "resume", str(run_dir), "a checkpoint of this run's model, with its full history"
        )
    try:
        load_strategy_state(strategy, checkpoint.strategy)
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(
            "resume",
            str(run_dir),
            f"a checkpoint written by this run's strategy ({type(error).__name__}: {error})",
        ) from None
    restore_rng(checkpoint.rng)
    LOGGER.info("resuming %s after round %d", run_dir, checkpoint.server_round)
    return ArrayRecord(checkpoint.arrays)
