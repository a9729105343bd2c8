"""Partitions of a split's rows, computed once per cache directory and read back after.

A deployed SuperNode handles every message in a fresh process; without this cache each
one would partition the split again, importing Flower Datasets and ``datasets`` (with
pandas and plotting libraries) for seconds. The cache key covers everything the
partition depends on: the per-row labels or natural ids, the partition settings and the
Flower Datasets version.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from importlib.metadata import version
from pathlib import Path

import numpy as np
import numpy.typing as npt

from fedhyper.atomic import atomic_write
from fedhyper.config import DatasetSpec
from fedhyper.data.partition import partition_indices

__all__ = ["cached_partitions"]

CACHE_FORMAT = 1
"""Part of every cache file name: bump it when the file layout changes."""

logger = logging.getLogger(__name__)

Partitions = tuple[npt.NDArray[np.int64], ...]


def cached_partitions(
    cache_dir: Path,
    spec: DatasetSpec,
    labels_or_ids: npt.NDArray[np.int64] | list[str],
    kind: str,
    num_clients: int,
    alpha: float,
    classes_per_client: int,
    seed: int,
) -> Partitions:
    """Return :func:`~fedhyper.data.partition.partition_indices`, from the cache if there.

    Parameters
    ----------
    cache_dir : Path
        The tensor cache directory; the partition file is written next to the tensors.
    spec : DatasetSpec
        The dataset.
    labels_or_ids : numpy.ndarray or list of str
        The labels, or for ``natural`` the natural ids, of the split's rows.
    kind, num_clients, alpha, classes_per_client, seed
        The partition settings; see :func:`~fedhyper.data.partition.partition_indices`.

    Returns
    -------
    tuple of numpy.ndarray
        Each client's row indices, equal to what ``partition_indices`` returns.

    """
    path = _cache_file(
        cache_dir, spec, labels_or_ids, [kind, num_clients, alpha, classes_per_client, seed]
    )
    cached = _read(path)
    if cached is not None:
        return cached
    partitions = tuple(
        partition_indices(spec, labels_or_ids, kind, num_clients, alpha, classes_per_client, seed)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.concatenate(partitions) if partitions else np.empty(0, dtype=np.int64)
    sizes = np.array([len(part) for part in partitions], dtype=np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, rows=rows, sizes=sizes)
    atomic_write(path, lambda handle: handle.write(buffer.getvalue()))
    return partitions


def _cache_file(
    cache_dir: Path,
    spec: DatasetSpec,
    labels_or_ids: npt.NDArray[np.int64] | list[str],
    settings: list[object],
) -> Path:
    digest = hashlib.sha256()
    if isinstance(labels_or_ids, np.ndarray):
        digest.update(np.ascontiguousarray(labels_or_ids, dtype=np.int64).tobytes())
    else:
        digest.update("\0".join(labels_or_ids).encode())
    digest.update(json.dumps([*settings, version("flwr-datasets")]).encode())
    return cache_dir / f"{spec.name}-partitions-{digest.hexdigest()[:16]}-v{CACHE_FORMAT}.npz"


def _read(path: Path) -> Partitions | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            rows, sizes = stored["rows"], stored["sizes"]
    except (OSError, ValueError, KeyError) as error:
        logger.warning("ignoring unreadable partition cache %s (%s)", path, error)
        return None
    return tuple(np.split(rows, np.cumsum(sizes)[:-1]))
