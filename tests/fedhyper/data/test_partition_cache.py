"""Partitions cached on disk: the partitioner's arrays, read back without Flower Datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fedhyper.data.partition_cache as partition_cache
from fedhyper.data import partition_indices
from fedhyper.data.partition_cache import cached_partitions
from tests.support.data import spec

# 40 rows of 4 labels: small enough to check every row.
LABELS = np.repeat(np.arange(4, dtype=np.int64), 10)


def test_the_cache_returns_the_partitioner_s_arrays_then_reads_them_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fmnist = spec("fashion_mnist")
    expected = partition_indices(fmnist, LABELS, "dirichlet", 5, 0.5, 2, seed=3)
    first = cached_partitions(tmp_path, fmnist, LABELS, "dirichlet", 5, 0.5, 2, 3)
    (written,) = tmp_path.glob("fashion_mnist-partitions-*.npz")

    def no_partitioner(*args: object) -> None:
        raise AssertionError("computed again instead of read from the cache")

    monkeypatch.setattr(partition_cache, "partition_indices", no_partitioner)
    again = cached_partitions(tmp_path, fmnist, LABELS, "dirichlet", 5, 0.5, 2, 3)
    for computed, cached, read in zip(expected, first, again, strict=True):
        assert read.dtype == np.int64
        assert np.array_equal(computed, cached) and np.array_equal(computed, read)
    assert list(tmp_path.glob("*.npz")) == [written]


def test_other_settings_or_labels_get_their_own_file(tmp_path: Path) -> None:
    fmnist = spec("fashion_mnist")
    cached_partitions(tmp_path, fmnist, LABELS, "iid", 4, 0.5, 2, 0)
    cached_partitions(tmp_path, fmnist, LABELS, "iid", 4, 0.5, 2, 1)
    cached_partitions(tmp_path, fmnist, LABELS, "iid", 5, 0.5, 2, 0)
    cached_partitions(tmp_path, fmnist, LABELS[::-1].copy(), "iid", 4, 0.5, 2, 0)
    natural = cached_partitions(tmp_path, spec("femnist"), ["b", "a", "b"], "natural", 2, 0.5, 2, 0)
    assert len(list(tmp_path.glob("*.npz"))) == 5
    assert [sorted(part.tolist()) for part in natural] == [[1], [0, 2]]


def test_an_unreadable_cache_file_is_computed_again(tmp_path: Path) -> None:
    fmnist = spec("fashion_mnist")
    first = cached_partitions(tmp_path, fmnist, LABELS, "iid", 4, 0.5, 2, 0)
    (written,) = tmp_path.glob("*.npz")
    written.write_bytes(b"not a numpy archive")
    again = cached_partitions(tmp_path, fmnist, LABELS, "iid", 4, 0.5, 2, 0)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
