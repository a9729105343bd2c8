"""Split a dataset's row indices among clients with Flower Datasets' partitioners.

The partitioners work on a Hugging Face ``Dataset``. Rather than hand them the full
split (images and all), we give them a two-column stand-in: the label (or natural id)
and the original row number, and read the row numbers back from each partition.
Flower Datasets and ``datasets`` (with pandas and plotting libraries behind them, seconds
to import) are imported only when a partition is computed, not by a client that reads
a cached one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

import numpy as np
import numpy.typing as npt

from fedhyper.config import DatasetSpec
from fedhyper.errors import ConfigError

if TYPE_CHECKING:
    from flwr_datasets.partitioner.partitioner import Partitioner

PartitionKind = Literal["iid", "dirichlet", "pathological", "natural"]
PARTITION_KINDS: tuple[str, ...] = get_args(PartitionKind)


def partition_indices(
    spec: DatasetSpec,
    labels_or_ids: npt.ArrayLike,
    kind: str,
    num_clients: int,
    alpha: float,
    classes_per_client: int,
    seed: int,
) -> list[npt.NDArray[np.int64]]:
    """Assign every row of a split to one client.

    Rows are first permuted with ``seed`` (as ``flwr_datasets.FederatedDataset`` does
    before partitioning), so ``iid`` does not inherit the file's order.

    Parameters
    ----------
    spec : DatasetSpec
        The dataset, for validation and messages.
    labels_or_ids : array_like
        One entry per row: the class label, or for ``kind="natural"`` the natural id.
    kind : {"iid", "dirichlet", "pathological", "natural"}
        ``iid``: equal random shards. ``dirichlet``: per-class proportions drawn from
        Dir(``alpha``); partitions may be empty when ``alpha`` is tiny (no minimum size,
        so sampling never fails). ``pathological``: each client gets exactly
        ``classes_per_client`` labels, the first one ``client_id % num_classes``.
        ``natural``: one client per distinct natural id, in sorted id order.
    num_clients : int
        Number of partitions; for ``natural`` it must equal the number of distinct ids.
    alpha : float
        Dirichlet concentration (``dirichlet`` only); smaller is more skewed.
    classes_per_client : int
        Labels per client (``pathological`` only).
    seed : int
        Seed for the row permutation and the partitioner's sampling.

    Returns
    -------
    list of numpy.ndarray
        ``num_clients`` arrays of row indices into the split; together they cover every
        row exactly once.

    Raises
    ------
    ConfigError
        For an unknown ``kind``, out-of-range parameters, or a ``natural`` partition
        whose ``num_clients`` differs from the number of natural ids.

    """
    import datasets

    values = np.asarray(labels_or_ids)
    partitioner = _make_partitioner(spec, kind, num_clients, alpha, classes_per_client, seed)
    order = np.random.default_rng(seed).permutation(len(values))
    stand_in = datasets.Dataset.from_dict({"key": values[order].tolist(), "row": order.tolist()})
    # Arrow format makes ``dataset[column]`` an Arrow array, which the partitioners turn
    # into NumPy in one step; under the default format datasets 4 iterates the column
    # row by row in Python (seconds for Shakespeare's 877k rows).
    partitioner.dataset = stand_in.with_format("arrow")
    if kind == "natural" and partitioner.num_partitions != num_clients:
        raise ConfigError(
            "partition.num_clients",
            num_clients,
            f"{partitioner.num_partitions} (the number of distinct "
            f"{spec.natural_id_column} values in {spec.name})",
        )
    # np.array copies: Arrow's zero-copy NumPy views are read-only.
    return [
        np.array(partitioner.load_partition(client)["row"], dtype=np.int64)
        for client in range(num_clients)
    ]


def _make_partitioner(
    spec: DatasetSpec,
    kind: str,
    num_clients: int,
    alpha: float,
    classes_per_client: int,
    seed: int,
) -> Partitioner:
    """Validate the parameters that ``kind`` uses and build its partitioner."""
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        NaturalIdPartitioner,
        PathologicalPartitioner,
    )

    if kind not in PARTITION_KINDS:
        raise ConfigError("partition.kind", kind, ", ".join(PARTITION_KINDS))
    if num_clients < 1:
        raise ConfigError("partition.num_clients", num_clients, "an integer >= 1")
    if kind == "iid":
        return IidPartitioner(num_partitions=num_clients)
    if kind == "dirichlet":
        if not alpha > 0:
            raise ConfigError("partition.alpha", alpha, "a number > 0")
        return DirichletPartitioner(
            num_partitions=num_clients,
            partition_by="key",
            alpha=alpha,
            # No minimum: with a small alpha a minimum forces resampling, which
            # flwr-datasets gives up on after 10 tries; an empty client is harmless.
            min_partition_size=0,
            # Self-balancing caps clients at the mean size, which dampens the skew
            # that alpha is meant to control.
            self_balancing=False,
            seed=seed,
        )
    if kind == "pathological":
        if not 1 <= classes_per_client <= spec.num_classes:
            raise ConfigError(
                "partition.classes_per_client", classes_per_client, f"1..{spec.num_classes}"
            )
        return PathologicalPartitioner(
            num_partitions=num_clients,
            partition_by="key",
            num_classes_per_partition=classes_per_client,
            # The original paper's scheme: every class is used once num_clients
            # reaches the number of classes.
            class_assignment_mode="first-deterministic",
            seed=seed,
        )
    if not spec.natural_id_column:
        allowed = ", ".join(k for k in PARTITION_KINDS if k != "natural")
        raise ConfigError(
            "partition.kind", kind, f"{allowed} ({spec.name} has no natural client ids)"
        )
    return NaturalIdPartitioner(partition_by="key")
