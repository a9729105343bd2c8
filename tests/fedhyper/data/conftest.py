"""Fixtures of the data-layer tests: one tensor cache per session, a mirror snapshot."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fedhyper.data import TensorSplit, load_tensors
from tests.support.data import mirror_snapshot, spec


@pytest.fixture(scope="session", autouse=True)
def mirror_before() -> dict[str, tuple[int, int]]:
    return mirror_snapshot()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One tensor cache for the session; the env var catches any call without one."""
    path = tmp_path_factory.mktemp("fedhyper-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEDHYPER_CACHE_DIR", str(path))
        yield str(path)


@pytest.fixture(scope="session")
def fmnist_train(cache_dir: str) -> TensorSplit:
    return load_tensors(spec("fashion_mnist"), "train", None, cache_dir)
