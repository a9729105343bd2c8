"""One round of federated training: sample, send, screen, retry, aggregate, evaluate.

It follows :meth:`flwr.serverapp.strategy.Strategy.start` (configure, send, aggregate,
evaluate) for one round and adds what an experiment needs around it: clients sampled by
partition as a pure function of the seed and round, screening of every reply before
aggregation, retries of rounds with too few usable replies, and the round's figures.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedhyper.config import ExperimentConfig
from fedhyper.errors import FedHyperError
from fedhyper.history import RoundRow
from fedhyper.rules.loss_guard import pooled_loss_ratio
from fedhyper.sampling import Purpose
from fedhyper.wire import (
    ClientTask,
    EvaluateInstruction,
    FederatedEvaluation,
    RoundTraining,
    TrainInstruction,
    TrainReport,
)
from strategies.delegating import DelegatingStrategy
from strategies.factory import weight_key
from strategies.federation import ClientDirectory, SampledGrid
from strategies.multiplex import Multiplexer
from strategies.rule_strategy import probe_losses
from strategies.screening import ArraySpec, screen_replies

LOGGER = logging.getLogger("fedhyper")


class RoundFailedError(FedHyperError):
    """A round got too few usable replies, retries included; the run stops."""


@dataclass
class RoundRecord:
    """A finished round, as the callbacks see it.

    Attributes
    ----------
    arrays : ArrayRecord
        The global model after the round.
    row : RoundRow
        Its figures; callbacks complete them.
    client_rule_states : dict of int to dict of str to float
        By client id, what the client's rule kept after its last training, this round's
        included.

    """

    arrays: ArrayRecord
    row: RoundRow
    client_rule_states: dict[int, dict[str, float]] = field(default_factory=dict)


@dataclass
class _Attempts:
    """What a round's attempts lost, for the history."""

    failures: int = 0
    timeouts: int = 0
    rejected: int = 0
    retries: int = 0


@dataclass
class _Trained:
    """The outcome of a round's training."""

    arrays: ArrayRecord
    metrics: MetricRecord | None
    accepted: list[Message]
    attempts: _Attempts


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


def _report(reply: Message) -> TrainReport:
    return TrainReport.from_record(next(iter(reply.content.metric_records.values())))


@dataclass
class RoundRunner:
    """Runs the rounds of one experiment; the strategy carries the state between them.

    Attributes
    ----------
    grid : Grid
        The connected federation.
    config : ExperimentConfig
        The experiment.
    strategy : Strategy
        Aggregates the replies (and holds the server rule's state).
    directory : ClientDirectory
        The clients, in client order, and the nodes that train them.
    trainable_keys : list of str
        Keys of the trainable floating-point parameters.
    spec : ArraySpec
        The model's keys, shapes and dtypes.
    client_rule_states : dict of int to dict of str to float or None
        By client id, what the client's rule kept after its last training before the
        first round run here (a resumed run's, from its checkpoint); ``None`` for none.

    """

    grid: Grid
    config: ExperimentConfig
    strategy: Strategy
    directory: ClientDirectory
    trainable_keys: list[str]
    spec: ArraySpec
    client_rule_states: InitVar[dict[int, dict[str, float]] | None] = None
    multiplexer: Multiplexer = field(init=False)

    def __post_init__(self, client_rule_states: dict[int, dict[str, float]] | None) -> None:
        self.multiplexer = Multiplexer(
            self.grid,
            self.directory,
            self.config.simulation,
            rule_states=dict(client_rule_states or {}),
        )

    def run(self, server_round: int, arrays: ArrayRecord) -> RoundRecord:
        """One round: train and aggregate, then evaluate on the clients.

        Parameters
        ----------
        server_round : int
            The round, from 1.
        arrays : ArrayRecord
            The global model at the start of the round.

        Returns
        -------
        RoundRecord
            The new global model and the round's figures; the centralised ``accuracy``
            and ``loss`` and ``wall_s`` are left to the callbacks.

        Raises
        ------
        RoundFailedError
            If every attempt got too few usable replies.

        """
        trained = self._train(server_round, arrays)
        training = RoundTraining.from_record(trained.metrics or {})
        evaluation = self._evaluate(server_round, trained.arrays)
        reports = [_report(reply) for reply in trained.accepted]
        scheduled = training.step.scheduled_client_lr
        probes = probe_losses(trained.accepted)
        row = RoundRow(
            round=server_round,
            train_loss=training.train_loss,
            federated_accuracy=math.nan if evaluation is None else evaluation.accuracy,
            federated_loss=math.nan if evaluation is None else evaluation.loss,
            global_lr=training.step.global_lr,
            hypergradient=training.step.hypergradient,
            client_lr_mean=statistics.fmean(report.lr_mean for report in reports),
            client_lr_min=min(report.lr_min for report in reports),
            client_lr_max=max(report.lr_max for report in reports),
            scheduled_client_lr=math.nan if scheduled is None else scheduled,
            # NaN unless every accepted client probed.
            probe_loss_ratio=pooled_loss_ratio(probes.before, probes.after),
            step_loss_ratio=pooled_loss_ratio(probes.previous, probes.before),
            clients_diverged=training.step.clients_diverged,
            clients=len(trained.accepted),
            failures=trained.attempts.failures,
            timeouts=trained.attempts.timeouts,
            rejected=trained.attempts.rejected,
            retries=trained.attempts.retries,
        )
        states = dict(self.multiplexer.rule_states)
        return RoundRecord(arrays=trained.arrays, row=row, client_rule_states=states)

    def _train(self, server_round: int, arrays: ArrayRecord) -> _Trained:
        """Train until enough usable replies arrive, then aggregate them.

        A failed attempt leaves the strategy untouched (it never sees those replies), so
        a skipped round changes no learning rate, accumulator or Δ_{t−1}.
        """
        config = self.config
        lost = _Attempts()
        for attempt in range(config.reliability.round_retries + 1):
            lost.retries = attempt
            clients = self.directory.sample(config, server_round, attempt, Purpose.TRAIN)
            instruction = TrainInstruction.from_experiment(config, server_round, attempt)
            messages = list(
                self.strategy.configure_train(
                    server_round,
                    arrays,
                    ConfigRecord(instruction.to_record()),
                    SampledGrid(self.grid, clients),
                )
            )
            replies = self.multiplexer.exchange(messages)
            screened = screen_replies(
                replies,
                self.spec,
                arrays,
                self.trainable_keys,
                weight_key(config),
                config.reliability.max_update_norm_ratio,
            )
            timeouts = len(messages) - len(replies)
            lost.timeouts += timeouts
            lost.failures += timeouts + len(screened.failed)
            lost.rejected += len(screened.rejected)
            self._log_problems(server_round, screened.failed, screened.rejected, timeouts)
            needed = required_replies(config, len(messages))
            if len(screened.accepted) >= needed:
                if isinstance(self.strategy, DelegatingStrategy):
                    rejected = [reply for reply, _ in screened.rejected]
                    self.strategy.observe_rejected(server_round, rejected)
                new_arrays, metrics = self.strategy.aggregate_train(server_round, screened.accepted)
                new_arrays = arrays if new_arrays is None else conform(new_arrays, self.spec)
                return _Trained(new_arrays, metrics, screened.accepted, lost)
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

    def _evaluate(self, server_round: int, arrays: ArrayRecord) -> FederatedEvaluation | None:
        """Evaluate the new global model on the sampled clients' validation splits."""
        clients = self.directory.sample(self.config, server_round, 0, Purpose.EVALUATE)
        instruction = EvaluateInstruction(server_round, ClientTask.from_experiment(self.config))
        messages = self.strategy.configure_evaluate(
            server_round,
            arrays,
            ConfigRecord(instruction.to_record()),
            SampledGrid(self.grid, clients),
        )
        replies = self.multiplexer.exchange(list(messages))
        metrics = self.strategy.aggregate_evaluate(server_round, replies)
        return None if metrics is None else FederatedEvaluation.from_record(metrics)

    def _log_problems(
        self,
        server_round: int,
        failed: Sequence[Message],
        rejected: Sequence[tuple[Message, str]],
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
