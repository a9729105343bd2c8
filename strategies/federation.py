"""The federation as the server sees it: its clients, and the nodes that can train them.

A client is a partition of the shared dataset, which any node holding that dataset can
train, or a SuperNode's own data. Clients are numbered in a stable order (partitions,
then the nodes with their own data by node id), so that the same seed samples the same
clients whatever nodes a run was given; a strategy configuring a round addresses its
messages to these client numbers, through :class:`SampledGrid`, and
:class:`strategies.multiplex.Multiplexer` delivers them to nodes. Every message goes out
and every reply comes back through :func:`exchange`, in simulation and deployment alike.
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

SETTLE_S = 0.5
"""Seconds the number of connected SuperNodes must stay the same before the run starts:
nodes register one by one (also in simulation), and more nodes only add speed."""


class FederationError(FedHyperError):
    """A SuperNode did not answer the server's query, or answered something else."""


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
class Client:
    """One client of the federation.

    Attributes
    ----------
    partition : int or None
        Its partition of the shared dataset; ``None`` for a SuperNode's own data.
    node_id : int or None
        The SuperNode holding its own data; ``None`` for a partition, which any node
        with the shared dataset can train.

    """

    partition: int | None
    node_id: int | None = None


@dataclass(frozen=True)
class ClientDirectory:
    """The federation's clients in a stable order, and the nodes that train partitions.

    Simulation gives every node a fresh random id each time it starts; numbering the
    clients by partition makes "client k" mean the same client in a run and in its
    resumption, whatever nodes serve it. Nodes with their own data follow the
    partitions, ordered by node id.

    Attributes
    ----------
    clients : list of Client
        The clients; a client's id is its position here.
    workers : list of int
        Ids of the nodes holding the shared dataset, in the order of their partition-id.

    """

    clients: list[Client]
    workers: list[int]

    def sample(
        self, config: ExperimentConfig, server_round: int, attempt: int, purpose: Purpose
    ) -> list[int]:
        """Return the client ids sampled for one attempt of a round, in client order."""
        count = (
            config.strategy.clients_per_round
            if purpose is Purpose.TRAIN
            else config.strategy.evaluate_clients_per_round
        )
        return sample_clients(config.seed, server_round, attempt, purpose, len(self.clients), count)

    def in_order(self, replies: Iterable[Message]) -> list[Message]:
        """Sort per-client replies into client order: arrival order would make float sums vary."""
        return sorted(replies, key=lambda reply: reply.metadata.src_node_id)

    def describe(self, client_id: int) -> str:
        """Name a client for log lines: its partition, or the node with its own data."""
        client = self.clients[client_id]
        return (
            f"partition {client.partition}"
            if client.partition is not None
            else f"node {client.node_id}"
        )


def discover_clients(grid: Grid, config: ExperimentConfig) -> ClientDirectory:
    """Wait for the SuperNodes, ask each whether it holds the shared dataset, number the clients.

    The federation has ``partition.num_clients`` clients: one per SuperNode with its own
    data, the rest partitions of the shared dataset, spread over the nodes that hold it.

    Parameters
    ----------
    grid : Grid
        The federation.
    config : ExperimentConfig
        The experiment (number of clients, timeouts).

    Returns
    -------
    ClientDirectory
        The clients in client order and the nodes that train partitions.

    Raises
    ------
    ConfigError
        If the nodes connected within ``simulation.node_wait_s`` cannot make up
        ``partition.num_clients`` clients.
    FederationError
        If a node does not answer the query.
    NodeConfigError
        If a node cannot run the experiment as configured (it lacks ``client.device``).

    """
    expected = config.partition.num_clients
    deadline = time.monotonic() + config.simulation.node_wait_s
    partitions: dict[int, int | None] = {}
    while True:
        node_ids = _settled_node_ids(grid, deadline)
        unknown = [node_id for node_id in node_ids if node_id not in partitions]
        partitions |= _ask_partitions(grid, config.simulation, unknown, config.client.device)
        workers = sorted(
            (node for node, partition in partitions.items() if partition is not None),
            key=lambda node: (partitions[node], node),
        )
        own_data = sorted(node for node, partition in partitions.items() if partition is None)
        if len(own_data) == expected or (workers and len(own_data) < expected):
            clients = [Client(partition) for partition in range(expected - len(own_data))]
            clients += [Client(None, node_id) for node_id in own_data]
            return ClientDirectory(clients, workers)
        if len(own_data) > expected or time.monotonic() > deadline:
            raise ConfigError(
                "partition.num_clients",
                expected,
                f"{len(own_data)} or more, the SuperNodes with their own data connected "
                f"after {config.simulation.node_wait_s:g} s, with {len(workers)} holding the "
                "shared dataset (node-config partition-id) to train the other partitions",
            )
        time.sleep(0.2)


def _settled_node_ids(grid: Grid, deadline: float) -> list[int]:
    """Return the connected nodes once their number stops changing (or at the deadline)."""
    count, since = -1, time.monotonic()
    while True:
        node_ids = sorted(grid.get_node_ids())
        now = time.monotonic()
        if len(node_ids) != count:
            count, since = len(node_ids), now
        elif (count and now - since >= SETTLE_S) or now > deadline:
            return node_ids
        time.sleep(0.2)


def find_partition_nodes(
    grid: Grid,
    expected: int,
    simulation: SimulationConfig,
    count_key: str,
    device: str = "auto",
) -> list[int]:
    """Find one SuperNode per partition, for servers that address each partition's node.

    Parameters
    ----------
    grid : Grid
        The federation.
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
    list of int
        The node ids by partition-id; nodes without one follow, by node id.

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
    partitions = _ask_partitions(grid, simulation, node_ids, device)
    claimed = [p for p in partitions.values() if p is not None]
    if len(set(claimed)) != len(claimed):
        twice = sorted({p for p in claimed if claimed.count(p) > 1})
        raise FederationError(
            f"partitions {twice[:5]} are served by more than one SuperNode; give each "
            f"node its own node-config {PARTITION_ID_KEY}"
        )
    return sorted(
        node_ids,
        key=lambda n: (0, partitions[n], n) if partitions[n] is not None else (1, 0, n),
    )


def _ask_partitions(
    grid: Grid, simulation: SimulationConfig, node_ids: Sequence[int], device: str
) -> dict[int, int | None]:
    """Ask nodes for their partition-id (whether each holds the shared dataset).

    The query names the device the clients will train on: a node without it answers a
    node-config error, which stops the run.
    """
    if not node_ids:
        return {}
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
            f"data they hold within {timeout:g} s (the longer of "
            f"simulation.node_wait_s and simulation.round_timeout_s){reason}"
        )
    partitions: dict[int, int | None] = {}
    for node_id, reply in answered.items():
        metrics = next(iter(reply.content.metric_records.values()), MetricRecord())
        try:
            partitions[node_id] = NodeInfo.from_record(metrics).partition
        except WireFormatError as error:
            raise FederationError(f"node {node_id}: {error}") from None
    return partitions


class SampledGrid(Grid):
    """The grid as a strategy sees it while configuring a round: only the sampled clients.

    Flower's strategies sample with ``random.sample(grid.get_node_ids(), k)``; offered
    exactly ``k`` client ids (their ``min_available_nodes`` is 0), they take all of them,
    so the runner decides who takes part, and address one message to each client.
    Everything else goes to the real grid.
    """

    def __init__(self, grid: Grid, node_ids: Sequence[int]) -> None:
        self._grid = grid
        self._node_ids = list(node_ids)

    def get_node_ids(self) -> Iterable[int]:
        """Return the sampled clients' ids."""
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
