"""The server's exchange with the nodes: short polls, the timeout, a node's config error."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import pytest
from flwr.app import Error, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedhyper.config import SimulationConfig
from fedhyper.wire import NODE_CONFIG_ERROR_CODE
from strategies.federation import NodeConfigError, exchange
from tests.support.grid import FixedNodes


class DelayedReplies(FixedNodes):
    """Nodes that answer each message ``delays[node]`` seconds after it was pushed."""

    def __init__(self, delays: dict[int, float], error_code: int | None = None) -> None:
        super().__init__(len(delays))
        self.delays, self.error_code = delays, error_code
        self.due: dict[str, tuple[float, Message]] = {}
        self.pulls = 0

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            reply = (
                Message(RecordDict(), reply_to=message)
                if self.error_code is None
                else Message(Error(self.error_code, "no CUDA here"), reply_to=message)
            )
            due = time.monotonic() + self.delays[message.metadata.dst_node_id]
            self.due[message.metadata.message_id] = (due, reply)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self.pulls += 1
        now = time.monotonic()
        ready = [i for i in message_ids if i in self.due and self.due[i][0] <= now]
        return [self.due.pop(i)[1] for i in ready]


def messages(nodes: Iterable[int]) -> list[Message]:
    return [Message(RecordDict(), dst_node_id=n, message_type=MessageType.TRAIN) for n in nodes]


@pytest.fixture(autouse=True)
def _server_identity() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0


def test_replies_are_collected_a_poll_interval_after_they_arrive() -> None:
    grid = DelayedReplies({1: 0.0, 2: 0.3})
    started = time.monotonic()
    replies = exchange(grid, messages([1, 2]), SimulationConfig(poll_interval_s=0.05))
    waited = time.monotonic() - started
    assert sorted(reply.metadata.src_node_id for reply in replies) == [1, 2]
    # Not Flower's fixed 3 s: the last reply is seen within a few polls of arriving.
    assert 0.3 <= waited < 1.0
    assert grid.pulls >= 3


def test_the_timeout_ends_the_wait_with_the_replies_that_came() -> None:
    grid = DelayedReplies({1: 0.0, 2: 60.0})
    started = time.monotonic()
    replies = exchange(grid, messages([1, 2]), SimulationConfig(poll_interval_s=0.05), 0.4)
    waited = time.monotonic() - started
    assert [reply.metadata.src_node_id for reply in replies] == [1]
    assert 0.4 <= waited < 1.0


def test_the_round_timeout_is_the_default() -> None:
    grid = DelayedReplies({1: 60.0})
    started = time.monotonic()
    config = SimulationConfig(poll_interval_s=0.05, round_timeout_s=0.2)
    assert exchange(grid, messages([1]), config) == []
    assert 0.2 <= time.monotonic() - started < 0.8


def test_a_node_that_cannot_run_the_task_stops_the_exchange_in_one_line() -> None:
    grid = DelayedReplies({1: 0.0}, error_code=NODE_CONFIG_ERROR_CODE)
    with pytest.raises(NodeConfigError, match=r"^SuperNode 1 cannot run this experiment: no CUDA"):
        exchange(grid, messages([1]), SimulationConfig(poll_interval_s=0.01))


def test_other_node_errors_are_replies_for_the_round_to_count() -> None:
    grid = DelayedReplies({1: 0.0}, error_code=2)  # Flower's CLIENT_APP_RAISED_EXCEPTION
    (reply,) = exchange(grid, messages([1]), SimulationConfig(poll_interval_s=0.01))
    assert reply.has_error() and reply.error.code == 2
