"""The ClientApp's start-up: a fresh process imports only what its message needs.

A deployed SuperNode starts a new ClientApp process for every message, so each one pays
the module's imports. Flower Datasets, ``datasets``, pandas and the plotting libraries
behind them cost seconds and are needed only to compute a partition, not to read one
from the cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from fedhyper.compose import compose_config
from fedhyper.training import flush_denormals
from fedhyper.wire import ClientTask, TrainInstruction
from tests.support.data import needs_mirror
from tests.support.paths import ROOT

HEAVY = ("flwr_datasets", "datasets", "pandas", "matplotlib", "seaborn")

CLIENT = """
import json, sys
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.client_app import app
from fedhyper.models import build_model
from fedhyper.wire import (
    ARRAYS_RECORD, CONFIG_RECORD, METRICS_RECORD, TrainInstruction, slot_record
)

heavy = sys.argv[1].split(",")
report = {"after_import": sorted(m for m in heavy if m in sys.modules)}
record = json.loads(sys.stdin.read())
task = TrainInstruction.from_record(record).task
TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
model = build_model(task.dataset, task.model, hidden_size=task.hidden_size)
content = {
    ARRAYS_RECORD: ArrayRecord(model.state_dict()),
    slot_record(CONFIG_RECORD, 0): ConfigRecord(record),
}
message = Message(RecordDict(content), dst_node_id=7, message_type=MessageType.TRAIN)
node_config = {"partition-id": 3}
context = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})
reply = app(message, context)
metrics = slot_record(METRICS_RECORD, 0)
report["trained"] = not reply.has_error() and metrics in reply.content.metric_records
report["after_training"] = sorted(m for m in heavy if m in sys.modules)
# The task's client.flush_denormals (on by default): 1e-39 is subnormal in float32.
report["flushes_subnormals"] = (torch.tensor([1e-39]) * 2.0).item() == 0.0
print(json.dumps(report))
"""


@needs_mirror
def test_a_client_on_cached_data_trains_without_the_partitioning_libraries(
    tmp_path: Path,
) -> None:
    config = compose_config(
        [
            f"dataset.cache_dir={tmp_path}",
            "partition.num_clients=10",
            "client.max_steps=2",
        ]
    )
    # The first client on this machine partitions the split; the cache keeps the result.
    ClientTask.from_experiment(config).partition(3)
    instruction = TrainInstruction.from_experiment(config, server_round=1, attempt=0)
    record = replace(instruction, partition=3).to_record()
    result = subprocess.run(
        [sys.executable, "-c", CLIENT, ",".join(HEAVY)],
        input=json.dumps(record),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Only a CPU with the FTZ/DAZ flags (x86) can flush; this process's flags go back off.
    has_flags = flush_denormals(True)
    flush_denormals(False)
    assert report == {
        "after_import": [],
        "trained": True,
        "after_training": [],
        "flushes_subnormals": has_flags,
    }
