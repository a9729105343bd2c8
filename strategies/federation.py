"""The federation as the server sees it: which SuperNode serves which client.

Clients are found and ordered by partition, so that the same seed samples the same
clients whatever node ids a run was given; a strategy configuring a round sees only the
nodes sampled for it, through :class:`SampledGrid`. Every message goes out and every
reply comes back through :func:`exchange`, in simulation and deployment alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedhyper.config import ExperimentConfig, SimulationConfig
from fedhyper.errors import ConfigError, FedHyperError
from fedhyper.sampling import Purpose, sample_clients
from fedhyper.wire import (
    CONFIG_RECORD,
    NODE_CONFIG_ERROR_CODE,
    PARTITION_ID_KEY,
    NodeInfo,
    NodeQuery,
    WireFormatError,
)


class FederationError(FedHyperError):
    """The SuperNodes cannot be told apart by partition, so sampling is not reproducible."""


class NodeConfigError(FedHyperError):
    """A SuperNode cannot run the experiment as configured (e.g. it lacks the device)."""


def exchange(
    grid: Grid,
    messages: Iterable[Message],
    simulation: SimulationConfig,
    timeout: float | None = None,
) -> list[Message]:
    """Send messages and collect the replies that arrive in time.

    The replies are pulled every ``simulation.poll_interval_s`` seconds: Flower's
    ``send_and_receive`` waits a fixed 3 s between pulls in a deployment, which a round
    whose clients answer in under a second would spend idle.

    Parameters
    ----------
    grid : Grid
        The federation.
    messages : iterable of Message
        One message per destination node.
    simulation : SimulationConfig
        The polling interval and the round timeout.
    timeout : float or None
        Seconds to wait for the replies; ``None`` means ``simulation.round_timeout_s``.

    Returns
    -------
    list of Message
        The replies that arrived within the timeout, in arrival order.

    Raises
    ------
    NodeConfigError
        If a node answered that it cannot run the task as configured.

    """
    wait_s = simulation.round_timeout_s if timeout is None else timeout
    deadline = time.monotonic() + wait_s
    pending = set(grid.push_messages(messages))
    replies: list[Message] = []
    while pending:
        arrived = list(grid.pull_messages(pending))
        replies.extend(arrived)
        pending -= {reply.metadata.reply_to_message_id for reply in arrived}
        left = deadline - time.monotonic()
        if not pending or left <= 0:
            break
        time.sleep(min(simulation.poll_interval_s, left))
    for reply in replies:
        if reply.has_error() and reply.error.code == NODE_CONFIG_ERROR_CODE:
            raise NodeConfigError(
                f"SuperNode {reply.metadata.src_node_id} cannot run this experiment: "
                f"{reply.error.reason}"
            )
    return replies


def wait_for_federation(
    grid: Grid, expected: int, simulation: SimulationConfig, count_key: str
) -> None:
    """Wait until ``expected`` SuperNodes have connected; fail clearly otherwise.

    SuperNodes register asynchronously (also in simulation), so the count is polled
    for up to ``simulation.node_wait_s`` seconds; ``count_key`` is the setting that
    asked for ``expected`` clients.
    """
    deadline = time.monotonic() + simulation.node_wait_s
    while (connected := len(list(grid.get_node_ids()))) < expected:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if connected != expected:
        raise ConfigError(
            count_key,
            expected,
            f"{connected}, the number of SuperNodes connected after "
            f"{simulation.node_wait_s:g} s (num-supernodes of the federation)",
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
    """Ask every SuperNode of an experiment's federation which partition it serves.

    See :func:`find_clients`; the experiment says how many clients and which timeouts.
    """
    return find_clients(
        grid, config.partition.num_clients, config.simulation, device=config.client.device
    )


def find_clients(
    grid: Grid,
    expected: int,
    simulation: SimulationConfig,
    count_key: str = "partition.num_clients",
    device: str = "auto",
) -> ClientDirectory:
    """Ask every SuperNode which partition it serves, and whether it has the device.

    Parameters
    ----------
    grid : Grid
        The connected federation.
    expected : int
        The number of SuperNodes to wait for.
    simulation : SimulationConfig
        The timeouts: ``node_wait_s`` for the nodes to connect, the longer of it and
        ``round_timeout_s`` for their answers.
    count_key : str
        The setting that asked for ``expected`` clients, named if fewer connect.
    device : str
        The ``client.device`` the nodes will train on; a node without it fails the run.

    Returns
    -------
    ClientDirectory
        The nodes in client order.

    Raises
    ------
    ConfigError
        If not ``expected`` nodes connect.
    FederationError
        If a node does not answer or two nodes claim one partition.
    NodeConfigError
        If a node cannot run the experiment as configured.

    """
    wait_for_federation(grid, expected, simulation, count_key)
    node_ids = sorted(grid.get_node_ids())
    query = NodeQuery(device=device)
    queries = [
        Message(
            RecordDict({CONFIG_RECORD: ConfigRecord(query.to_record())}),
            dst_node_id=node_id,
            message_type=MessageType.QUERY,
        )
        for node_id in node_ids
    ]
    # Simulation starts its workers on the first message: allow start-up time, not just
    # a round's.
    timeout = max(simulation.node_wait_s, simulation.round_timeout_s)
    replies = exchange(grid, queries, simulation, timeout)
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
        try:
            partitions[node_id] = NodeInfo.from_record(metrics).partition
        except WireFormatError as error:
            raise FederationError(f"node {node_id}: {error}") from None
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
