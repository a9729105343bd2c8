"""Small in-process experiments: a tiny IID federation and comparing final models."""

from __future__ import annotations

from pathlib import Path

import torch

from fedhyper.compose import compose_config
from fedhyper.config import ExperimentConfig
from strategies.runner import MODEL_FILE

# Twenty IID clients of 3,000 rows: small partitions keep in-process rounds near a second.
TINY = [
    "partition=iid",
    "partition.num_clients=20",
    "strategy.clients_per_round=2",
    "strategy.evaluate_clients_per_round=1",
    "dataset.test_examples=200",
    "client.max_steps=2",
    "logging.progress=false",
]


def config(*overrides: str) -> ExperimentConfig:
    """The tiny experiment with ``overrides`` applied."""
    return compose_config([*TINY, *overrides])


def same_weights(a: Path, b: Path) -> bool:
    """Whether two run directories saved identical final models."""
    first, second = torch.load(a / MODEL_FILE), torch.load(b / MODEL_FILE)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
