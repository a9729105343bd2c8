"""Deliver the strategy's per-client messages to nodes, several clients to a message.

A strategy configures a round as if every sampled client were a node of its own: one
message per client, addressed to the client's id. The :class:`Multiplexer` assigns the
clients to nodes (balanced by their expected work, largest first), sends each node one
message bundling its clients (:func:`fedhyper.wire.slot_record`), and turns the nodes'
bundled replies back into one reply per client, from the client's id. Screening,
aggregation, faults and the history therefore see clients, whatever the number of
nodes. What a client's rule keeps between rounds travels with the client: the server
keeps it and sends it back with the client's next instruction.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace

from flwr.app import ConfigRecord, Error, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fedhyper.balance import balance
from fedhyper.config import SimulationConfig
from fedhyper.wire import (
    CLIENT_RULE_STATE_RECORD,
    CONFIG_RECORD,
    FAILURE_RECORD,
    METRICS_RECORD,
    EvaluateInstruction,
    SlotFailure,
    TrainInstruction,
    TrainReport,
    WireFormatError,
    rule_state_from_record,
    slot_record,
    split_slots,
)
from strategies.federation import ClientDirectory, exchange

__all__ = ["Multiplexer"]


@dataclass
class Multiplexer:
    """Sends per-client messages to nodes and returns per-client replies.

    Attributes
    ----------
    grid : Grid
        The federation.
    directory : ClientDirectory
        The clients and the nodes that train partitions.
    simulation : SimulationConfig
        How long to wait for the nodes' replies, and how often to look for them.
    rule_states : dict of int to dict of str to float
        By client id, what its rule kept after its last training.
    steps : dict of int to int
        By client id, the optimiser steps of its last training: its expected work.

    """

    grid: Grid
    directory: ClientDirectory
    simulation: SimulationConfig
    rule_states: dict[int, dict[str, float]] = field(default_factory=dict)
    steps: dict[int, int] = field(default_factory=dict)

    def exchange(self, messages: Sequence[Message]) -> list[Message]:
        """Deliver one round's per-client messages and collect the clients' replies.

        Parameters
        ----------
        messages : sequence of Message
            The strategy's messages, each addressed to a client id.

        Returns
        -------
        list of Message
            One reply per client whose node answered in time, from the client's id, in
            client order; a client that failed has an error reply, a late one none.

        Raises
        ------
        NodeConfigError
            If a node answered that it cannot run the task as configured.

        """
        by_client = {message.metadata.dst_node_id: message for message in messages}
        bundles = {
            node_id: [by_client[client] for client in clients]
            for node_id, clients in self._assign(list(by_client)).items()
            if clients
        }
        sent = [self._bundle(node_id, bundled) for node_id, bundled in bundles.items()]
        replies: list[Message] = []
        for reply in exchange(self.grid, sent, self.simulation):
            replies += self._unbundle(reply, bundles[reply.metadata.src_node_id])
        return self.directory.in_order(replies)

    def _assign(self, client_ids: Sequence[int]) -> dict[int, list[int]]:
        """Give clients with their own data to their node, partitions to the workers."""
        assigned: dict[int, list[int]] = {}
        partitions: dict[int, float] = {}
        for client_id in client_ids:
            node_id = self.directory.clients[client_id].node_id
            if node_id is None:
                partitions[client_id] = self._expected_steps(client_id)
            else:
                assigned.setdefault(node_id, []).append(client_id)
        if partitions:
            workers = self.directory.workers
            for worker, clients in zip(workers, balance(partitions, len(workers)), strict=True):
                assigned.setdefault(worker, []).extend(clients)
        return assigned

    def _expected_steps(self, client_id: int) -> float:
        """Return a client's steps last time, else the others' mean (1 before any)."""
        if client_id in self.steps:
            return float(self.steps[client_id])
        return sum(self.steps.values()) / len(self.steps) if self.steps else 1.0

    def _bundle(self, node_id: int, messages: Sequence[Message]) -> Message:
        """One message for a node: shared model arrays once, each client's records in its slot."""
        first = messages[0].content
        # Strategies send every client the same model object: serialise it once.
        shared = [
            name
            for name, record in first.array_records.items()
            if all(message.content.get(name) is record for message in messages)
        ]
        content = RecordDict({name: first[name] for name in shared})
        for slot, message in enumerate(messages):
            for name, record in message.content.items():
                if name == CONFIG_RECORD:
                    content[slot_record(name, slot)] = self._instruction(message)
                elif name not in shared:
                    content[slot_record(name, slot)] = record
        return Message(content, dst_node_id=node_id, message_type=messages[0].metadata.message_type)

    def _instruction(self, message: Message) -> ConfigRecord:
        """Return the client's instruction with its partition and its rule's state added."""
        client_id = message.metadata.dst_node_id
        partition = self.directory.clients[client_id].partition
        record = message.content.config_records[CONFIG_RECORD]
        if message.metadata.message_type == MessageType.TRAIN:
            train = TrainInstruction.from_record(record)
            state = self.rule_states.get(client_id, {})
            return ConfigRecord(
                replace(train, partition=partition, client_rule_state=state).to_record()
            )
        evaluation = EvaluateInstruction.from_record(record)
        return ConfigRecord(replace(evaluation, partition=partition).to_record())

    def _unbundle(self, reply: Message, messages: Sequence[Message]) -> list[Message]:
        """Split a node's reply into its clients' replies; keep their rules' state."""
        if reply.has_error():
            return [Message(reply.error, reply_to=message) for message in messages]
        try:
            shared, slots = split_slots(list(reply.content.keys()))
            if shared or len(slots) != len(messages):
                raise WireFormatError(
                    f"{len(slots)} client slots and records {shared[:3]} outside them, "
                    f"for {len(messages)} clients"
                )
        except WireFormatError as error:
            failed = Error(code=ErrorCode.UNKNOWN, reason=f"malformed bundled reply: {error}")
            return [Message(failed, reply_to=message) for message in messages]
        replies = []
        for message, own in zip(messages, slots, strict=True):
            records = RecordDict({name: reply.content[bundled] for name, bundled in own.items()})
            outcome = self._client_reply(message, records)
            if outcome is not None:
                replies.append(outcome)
        return replies

    def _client_reply(self, message: Message, records: RecordDict) -> Message | None:
        """One client's reply: its result, an error, or ``None`` when it was late."""
        client_id = message.metadata.dst_node_id
        try:
            if FAILURE_RECORD in records:
                failure = SlotFailure.from_record(records.config_records[FAILURE_RECORD])
                if failure.late:
                    return None
                code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
                return Message(Error(code=code, reason=failure.reason), reply_to=message)
            if CLIENT_RULE_STATE_RECORD in records:
                state = records.config_records[CLIENT_RULE_STATE_RECORD]
                self.rule_states[client_id] = rule_state_from_record(state)
                del records[CLIENT_RULE_STATE_RECORD]
        except WireFormatError as error:
            return Message(Error(code=ErrorCode.UNKNOWN, reason=str(error)), reply_to=message)
        if message.metadata.message_type == MessageType.TRAIN:
            self._note_steps(client_id, records)
        return Message(records, reply_to=message)

    def _note_steps(self, client_id: int, records: RecordDict) -> None:
        metrics = records.metric_records.get(METRICS_RECORD)
        # A malformed report is the screening's to reject; its work stays unknown.
        with suppress(WireFormatError):
            self.steps[client_id] = TrainReport.from_record(metrics or {}).steps
