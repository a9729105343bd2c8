"""Partitions of the real datasets' rows among clients."""

from __future__ import annotations

import numpy as np
import pytest

from fedhyper.data import (
    ConfigError,
    TensorSplit,
    load_tensors,
    num_natural_clients,
    partition_indices,
)
from tests.support.data import needs_mirror, spec

# --- partitioning ---------------------------------------------------------------------


def top2_share(labels: np.ndarray, parts: list[np.ndarray]) -> list[float]:
    """Per client, the share of its examples that carry its two most common labels."""
    return [np.sort(np.bincount(labels[p], minlength=10))[-2:].sum() / len(p) for p in parts]


@needs_mirror
def test_dirichlet_covers_every_row_once(fmnist_train: TensorSplit) -> None:
    labels = fmnist_train.labels.numpy()
    parts = partition_indices(spec("fashion_mnist"), labels, "dirichlet", 100, 0.5, 2, seed=1)
    assert len(parts) == 100
    rows = np.concatenate(parts)
    assert len(rows) == 60_000 and np.array_equal(np.sort(rows), np.arange(60_000))


@needs_mirror
def test_dirichlet_alpha_controls_label_skew(fmnist_train: TensorSplit) -> None:
    labels = fmnist_train.labels.numpy()
    skewed = partition_indices(spec("fashion_mnist"), labels, "dirichlet", 100, 0.1, 2, seed=0)
    even = partition_indices(spec("fashion_mnist"), labels, "dirichlet", 100, 100.0, 2, seed=0)
    # Uniform labels give a top-2 share of 0.2; alpha=0.1 clients are dominated by two.
    assert np.mean(top2_share(labels, [p for p in skewed if len(p)])) > 0.75
    assert max(top2_share(labels, even)) < 0.3


@needs_mirror
def test_partitions_are_deterministic_per_seed(fmnist_train: TensorSplit) -> None:
    labels = fmnist_train.labels.numpy()
    first = partition_indices(spec("fashion_mnist"), labels, "iid", 100, 0.5, 2, seed=7)
    second = partition_indices(spec("fashion_mnist"), labels, "iid", 100, 0.5, 2, seed=7)
    other = partition_indices(spec("fashion_mnist"), labels, "iid", 100, 0.5, 2, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], other[0])
    assert {len(p) for p in first} == {600}
    # IID shards are shuffled, not file-order slices: every client sees most labels.
    assert min(len(np.unique(labels[p])) for p in first) >= 8


@needs_mirror
def test_pathological_gives_k_labels_per_client(fmnist_train: TensorSplit) -> None:
    labels = fmnist_train.labels.numpy()
    parts = partition_indices(spec("fashion_mnist"), labels, "pathological", 50, 0.5, 3, seed=0)
    assert {len(np.unique(labels[p])) for p in parts} == {3}
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(60_000))


@needs_mirror
def test_femnist_natural_partition_is_one_writer_per_client(cache_dir: str) -> None:
    decoded = load_tensors(spec("femnist"), "train", None, cache_dir)
    assert decoded.natural_ids is not None
    ids = np.asarray(decoded.natural_ids)
    assert num_natural_clients(spec("femnist"), cache_dir=cache_dir) == 105
    parts = partition_indices(spec("femnist"), decoded.natural_ids, "natural", 105, 0.5, 2, seed=0)
    writers = [set(ids[p]) for p in parts]
    assert all(len(w) == 1 for w in writers)
    assert len(set.union(*writers)) == 105
    assert sum(len(p) for p in parts) == 14_708
    with pytest.raises(ConfigError, match=r"'partition.num_clients': 100 \(allowed: 105"):
        partition_indices(spec("femnist"), decoded.natural_ids, "natural", 100, 0.5, 2, seed=0)


@needs_mirror
def test_shakespeare_natural_partition_is_one_role_per_client(cache_dir: str) -> None:
    decoded = load_tensors(spec("shakespeare"), "train", None, cache_dir)
    assert decoded.natural_ids is not None
    ids = np.asarray(decoded.natural_ids)
    parts = partition_indices(
        spec("shakespeare"), decoded.natural_ids, "natural", 152, 0.5, 2, seed=0
    )
    roles = [set(ids[p]) for p in parts]
    assert all(len(r) == 1 for r in roles)
    assert len(set.union(*roles)) == 152
    # Partition ids follow the sorted natural ids, as in flwr-datasets.
    assert [r.pop() for r in roles] == sorted(set(decoded.natural_ids))


def test_invalid_partition_settings_raise_config_errors() -> None:
    labels = np.zeros(20, dtype=np.int64)
    cases = [
        ("fashion_mnist", "shards", 2, 0.5, 2, "partition.kind"),
        ("fashion_mnist", "natural", 2, 0.5, 2, "partition.kind"),
        ("fashion_mnist", "dirichlet", 2, 0.0, 2, "partition.alpha"),
        ("fashion_mnist", "pathological", 2, 0.5, 11, "partition.classes_per_client"),
        ("fashion_mnist", "iid", 0, 0.5, 2, "partition.num_clients"),
    ]
    for name, kind, clients, alpha, classes, key in cases:
        with pytest.raises(ConfigError) as caught:
            partition_indices(spec(name), labels, kind, clients, alpha, classes, seed=0)
        assert caught.value.key == key
