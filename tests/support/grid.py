"""Fixed nodes, hand-made model arrays and client replies: strategies without a federation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from flwr.app import ArrayRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

SAMPLING = {"min_train_nodes": 2, "min_available_nodes": 2}
"""Sampling arguments of a strategy over two fixed nodes."""

KEYS = ["w"]  # the only trainable key; "bn.running_mean" and the counter are buffers


class FixedNodes(Grid):
    """The network as a strategy sees it when sampling: a fixed set of node ids."""

    def __init__(self, count: int) -> None:
        self.nodes = list(range(1, count + 1))

    def get_node_ids(self) -> Iterable[int]:
        return self.nodes

    def set_run(self, run_id: int) -> None:
        raise NotImplementedError

    @property
    def run(self) -> None:
        raise NotImplementedError

    def create_message(self, *args: object, **kwargs: object) -> Message:
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        raise NotImplementedError


def model(w: list[float], running_mean: float = 0.0, count: int = 0) -> ArrayRecord:
    return ArrayRecord(
        {
            "w": torch.tensor(w, dtype=torch.float32),
            "bn.running_mean": torch.tensor([running_mean], dtype=torch.float32),
            "bn.num_batches_tracked": torch.tensor(count, dtype=torch.int64),
        }
    )


def reply(arrays: ArrayRecord, examples: int) -> Message:
    metrics = MetricRecord({"num-examples": examples, "uniform-weight": 1, "train-loss": 0.0})
    content = RecordDict({"arrays": arrays, "metrics": metrics})
    return Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN)
