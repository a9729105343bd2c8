"""The real offline dataset mirror (``../shared/data``) and the built-in dataset specs."""

from __future__ import annotations

import functools

import pytest

from fedhyper.compose import compose_config
from fedhyper.config import DatasetConfig, DatasetSpec
from fedhyper.data import resolve_data_dir

MIRROR = resolve_data_dir(None)


needs_mirror = pytest.mark.skipif(
    MIRROR is None or not (MIRROR / "fashion_mnist" / "train.parquet").is_file(),
    reason="real dataset mirror not found (expected ../shared/data from the repository "
    "root, or set FEDHYPER_DATA_DIR)",
)


def mirror_snapshot() -> dict[str, tuple[int, int]]:
    if MIRROR is None:
        return {}
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(MIRROR.rglob("*"))
    }


@functools.cache
def dataset(name: str) -> DatasetConfig:
    """The ``dataset`` group as ``conf/dataset/<name>.yaml`` composes it."""
    return compose_config([f"dataset={name}"]).dataset


def spec(name: str) -> DatasetSpec:
    return dataset(name).spec()
