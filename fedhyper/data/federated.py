"""What the Flower client and server ask of the data layer.

A simulation worker process serves many clients in turn, so everything expensive is
memoised per process: the decoded split (:func:`~fedhyper.data.tensors.load_tensors`)
and the partition of its rows (:func:`_partitions`). Serving one client then costs an
index, a shuffle and a dtype conversion of that client's rows only. Both are also cached
on disk, for the fresh process a deployed SuperNode starts for every message.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import TensorDataset

from fedhyper.config import DatasetConfig, DatasetSpec, PartitionConfig
from fedhyper.data.partition_cache import cached_partitions
from fedhyper.data.source import resolve_data_dir
from fedhyper.data.tensors import TensorSplit, load_tensors, resolve_cache_dir, to_model_inputs
from fedhyper.errors import ConfigError

# A fixed subset seed keeps a capped test set identical across runs and strategies.
_TEST_SUBSET_SEED = 0


@dataclass(frozen=True)
class ClientData:
    """One client's local data.

    Attributes
    ----------
    train, validation : TensorDataset
        ``(inputs, labels)`` pairs: normalised ``float32`` images or ``int64``
        character indices, and ``int64`` labels. ``validation`` may be empty.

    """

    train: TensorDataset
    validation: TensorDataset


def client_data(
    spec: DatasetSpec,
    partition_id: int,
    *,
    data_dir: str | None = None,
    cache_dir: str | None = None,
    kind: str,
    num_clients: int,
    alpha: float = 0.5,
    classes_per_client: int = 2,
    seed: int = 0,
    validation_fraction: float = 0.0,
) -> ClientData:
    """Return the train and validation data of client ``partition_id``.

    Parameters
    ----------
    spec : DatasetSpec
        The dataset.
    partition_id : int
        The client's index, ``0 <= partition_id < num_clients``.
    data_dir, cache_dir : str or None
        Explicit data and cache directories (``None``: environment or defaults).
    kind, num_clients, alpha, classes_per_client, seed
        Partitioning of the train split; see
        :func:`~fedhyper.data.partition.partition_indices`.
    validation_fraction : float
        Share of the client's rows held out for validation, in ``[0, 1)``; the count
        is rounded down, so small clients may get no validation rows.

    Returns
    -------
    ClientData
        The client's rows, split reproducibly (depends on ``seed`` and
        ``partition_id`` only).

    Raises
    ------
    ConfigError
        For invalid parameters.

    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError("dataset.validation_fraction", validation_fraction, "0 <= x < 1")
    if not 0 <= partition_id < num_clients:
        raise ValueError(f"partition_id {partition_id} is outside 0..{num_clients - 1}")
    root = resolve_data_dir(data_dir)
    data_dir_key = str(root) if root else None
    cache_dir_key = str(resolve_cache_dir(cache_dir))
    rows = _partitions(
        spec, data_dir_key, cache_dir_key, kind, num_clients, alpha, classes_per_client, seed
    )[partition_id]
    train_rows, validation_rows = _split_rows(rows, seed, partition_id, validation_fraction)
    split = load_tensors(spec, "train", data_dir_key, cache_dir_key)
    return ClientData(
        train=_subset(spec, split, train_rows), validation=_subset(spec, split, validation_rows)
    )


def _split_rows(
    rows: npt.NDArray[np.int64], seed: int, partition_id: int, validation_fraction: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Shuffle a client's rows by ``(seed, partition_id)``; return (train, validation) rows."""
    order = np.random.default_rng([seed, partition_id]).permutation(len(rows))
    num_validation = int(len(rows) * validation_fraction)
    return rows[order[num_validation:]], rows[order[:num_validation]]


def _subset(spec: DatasetSpec, split: TensorSplit, rows: npt.NDArray[np.int64]) -> TensorDataset:
    index = torch.from_numpy(rows)
    return TensorDataset(to_model_inputs(spec, split.inputs[index]), split.labels[index])


def pooled_validation(
    dataset: DatasetConfig, partition: PartitionConfig, seed: int, examples: int
) -> TensorDataset:
    """Return a seeded sample of the rows every client holds out for validation.

    The clients never train on these rows, and they are not the test set, so the server
    can compare models on them without touching either.

    Parameters
    ----------
    dataset : DatasetConfig
        The dataset, its directories and ``validation_fraction``.
    partition : PartitionConfig
        How the train split is partitioned among the clients.
    seed : int
        The experiment's seed (of the partition, and of this sample).
    examples : int
        Rows to sample (all of them if the clients hold out fewer).

    Returns
    -------
    TensorDataset
        ``(inputs, labels)`` as in :class:`ClientData`, in train-split order.

    """
    spec = dataset.spec()
    data_dir = resolve_data_dir(dataset.data_dir)
    cache_dir = str(resolve_cache_dir(dataset.cache_dir))
    partitions = _partitions(
        spec,
        str(data_dir) if data_dir else None,
        cache_dir,
        partition.kind,
        partition.num_clients,
        partition.alpha,
        partition.classes_per_client,
        seed,
    )
    held_out = np.concatenate(
        [
            _split_rows(rows, seed, partition_id, dataset.validation_fraction)[1]
            for partition_id, rows in enumerate(partitions)
        ]
    )
    chosen = np.random.default_rng(seed).permutation(len(held_out))[:examples]
    split = load_tensors(spec, "train", str(data_dir) if data_dir else None, cache_dir)
    return _subset(spec, split, np.sort(held_out[chosen]))


@functools.lru_cache(maxsize=8)
def _partitions(
    spec: DatasetSpec,
    data_dir: str | None,
    cache_dir: str,
    kind: str,
    num_clients: int,
    alpha: float,
    classes_per_client: int,
    seed: int,
) -> tuple[npt.NDArray[np.int64], ...]:
    """Partition the train split once per process and configuration."""
    split = load_tensors(spec, "train", data_dir, cache_dir)
    # Without natural ids, "natural" gets labels and partition_indices rejects the kind.
    ids = split.natural_ids
    keys = ids if kind == "natural" and ids is not None else split.labels.numpy()
    return cached_partitions(
        Path(cache_dir), spec, keys, kind, num_clients, alpha, classes_per_client, seed
    )


def test_data(dataset: DatasetConfig) -> TensorDataset:
    """Return the centralised test set of an experiment.

    Parameters
    ----------
    dataset : DatasetConfig
        The dataset, its directories, and ``test_examples``: if positive and smaller
        than the test split, a fixed random subset of this size (same rows on every
        call, in file order); ``0`` means all rows.

    Returns
    -------
    TensorDataset
        ``(inputs, labels)`` as in :class:`ClientData`.

    """
    spec, max_examples = dataset.spec(), dataset.test_examples
    if max_examples < 0:
        raise ConfigError("dataset.test_examples", max_examples, "an integer >= 0")
    split = load_tensors(spec, "test", dataset.data_dir, dataset.cache_dir)
    inputs, labels = split.inputs, split.labels
    if 0 < max_examples < len(split):
        # A random subset, not the first rows: some test files are grouped by client
        # (Shakespeare by role), so a prefix would be badly skewed.
        chosen = np.random.default_rng(_TEST_SUBSET_SEED).choice(
            len(split), size=max_examples, replace=False
        )
        index = torch.from_numpy(np.sort(chosen))
        inputs, labels = inputs[index], labels[index]
    return TensorDataset(to_model_inputs(spec, inputs), labels)


# The name starts with "test": keep pytest from collecting it when a test imports it.
test_data.__test__ = False  # type: ignore[attr-defined]


def num_natural_clients(
    spec: DatasetSpec, data_dir: str | None = None, *, cache_dir: str | None = None
) -> int:
    """Return how many natural clients (distinct writer or role ids) the train split has.

    Parameters
    ----------
    spec : DatasetSpec
        The dataset.
    data_dir, cache_dir : str or None
        Explicit data and cache directories (``None``: environment or defaults).

    Returns
    -------
    int
        The number of distinct natural ids, i.e. the required ``num_clients`` for
        ``kind="natural"``.

    Raises
    ------
    ConfigError
        If the dataset has no natural client ids.

    """
    if not spec.natural_id_column:
        raise ConfigError(
            "dataset.natural_id_column", "", f"the column of {spec.name} naming each row's client"
        )
    natural_ids = load_tensors(spec, "train", data_dir, cache_dir).natural_ids
    return len(set(natural_ids or ()))
