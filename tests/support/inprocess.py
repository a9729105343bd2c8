"""A federation of ClientApps called in the test process: the runner's path without Ray.

Real Flower simulations cost ~15 s of start-up each; the runner only needs a ``Grid``.
This one gives every instance fresh random node ids (as Flower's simulation does) and
hands each message to the real ClientApp with that node's persistent ``Context``, so
runs here exercise the same sampling, screening, retry, checkpoint and client code.
Timeouts are not modelled: the delay fault is tested in a real simulation.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from clients.client_app import app as client_app
from clients.client_app import evaluate_global, query
from clients.faults import inject_fault
from clients.slots import serve_slots
from fedhyper.config import ExperimentConfig
from fedhyper.history import RunSummary
from fedhyper.wire import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    METRICS_RECORD,
    TrainInstruction,
    TrainReport,
)
from strategies.callbacks import RoundCallback
from strategies.runner import run_federation


class InProcessGrid(Grid):
    """``num_nodes`` SuperNodes with random ids, each holding the shared dataset."""

    def __init__(self, num_nodes: int, app: ClientApp = client_app) -> None:
        # The identity of the server, as Flower sets it in its server process.
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
        self.app = app
        node_ids = random.Random().sample(range(1, 2**62), num_nodes)
        self.contexts = {
            node_id: Context(
                run_id=1,
                node_id=node_id,
                node_config={"partition-id": partition, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config={},
            )
            for partition, node_id in enumerate(node_ids)
        }
        self.replies: dict[str, Message] = {}

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def set_run(self, run: Run) -> None:
        raise NotImplementedError

    @property
    def run(self) -> Run:
        raise NotImplementedError

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        raise NotImplementedError

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        # Each message is answered as it is pushed; the reply waits for its pull.
        message_ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            context = self.contexts[message.metadata.dst_node_id]
            try:
                reply = self.app(message, context)
            # What Flower's simulation worker does with an exception in a ClientApp.
            except Exception as error:
                reason = f"{type(error)}:<'{error}'>"
                code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
                reply = Message(Error(code=code, reason=reason), reply_to=message)
            self.replies[message.metadata.message_id] = reply
            message_ids.append(message.metadata.message_id)
        return message_ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        raise NotImplementedError


def run_in_process(
    config: ExperimentConfig,
    run_dir: Path,
    app: ClientApp = client_app,
    callbacks: Sequence[RoundCallback] | None = None,
    num_nodes: int = 2,
) -> RunSummary:
    """Run an experiment on a fresh :class:`InProcessGrid`, as ``simulate`` would on Ray."""
    grid = InProcessGrid(num_nodes, app)
    return run_federation(grid, config, run_dir, callbacks)


synthetic_app = ClientApp()
"""Clients that skip training: each returns the global model plus a small seeded step.

For tests of what the server does with replies (screening, strategies), where real
training would only cost time. Faults are injected as in the real ClientApp.
"""
synthetic_app.query()(query)
synthetic_app.evaluate()(evaluate_global)


@synthetic_app.train()
def _synthetic_train(message: Message, context: Context) -> Message:
    return serve_slots(message, context, _synthetic_train_one)


def _synthetic_train_one(content: RecordDict, context: Context) -> RecordDict:
    instruction = TrainInstruction.from_record(content.config_records[CONFIG_RECORD])
    partition = instruction.partition
    assert partition is not None
    generator = torch.Generator().manual_seed(1000 * instruction.server_round + partition)
    state = content.array_records[ARRAYS_RECORD].to_torch_state_dict()
    stepped = {
        key: value + 0.01 * torch.randn(value.shape, generator=generator)
        if value.is_floating_point()
        else value
        for key, value in state.items()
    }
    report = TrainReport.from_lrs(10 + partition, 1.0, [instruction.lr])
    reply = RecordDict(
        {
            ARRAYS_RECORD: ArrayRecord(stepped),
            METRICS_RECORD: MetricRecord(report.to_record()),
        }
    )
    return inject_fault(instruction, partition, reply)


def comparable(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History rows as two identical runs must agree on them.

    Wall time differs between runs; NaN (e.g. no scheduled client LR) never equals NaN,
    so it becomes the string ``"nan"``.
    """
    return [
        {
            key: "nan" if isinstance(value, float) and math.isnan(value) else value
            for key, value in row.items()
            if key != "wall_s"
        }
        for row in history
    ]
