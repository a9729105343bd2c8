"""Tests of the data layer on the real offline mirror (``../shared/data``)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from fedhyper.compose import compose_config
from fedhyper.config import DatasetConfig, DatasetSpec
from fedhyper.data import (
    ClientData,
    ConfigError,
    TensorSplit,
    client_data,
    load_tensors,
    num_natural_clients,
    partition_indices,
    resolve_data_dir,
    test_data,
    to_float_inputs,
)
from fedhyper.data import federated as federated_module
from fedhyper.data import tensors as tensors_module
from fedhyper.data.source import ENV_DATA_DIR

MIRROR = resolve_data_dir(None)
needs_mirror = pytest.mark.skipif(
    MIRROR is None or not (MIRROR / "fashion_mnist" / "train.parquet").is_file(),
    reason="real dataset mirror not found (expected ../shared/data from the repository "
    "root, or set FEDHYPER_DATA_DIR)",
)


def manifest_rows(folder: str, split: str) -> int:
    assert MIRROR is not None
    manifest = json.loads((MIRROR / folder / "manifest.json").read_text())
    return next(f["rows"] for f in manifest["files"] if Path(f["file"]).name == f"{split}.parquet")


def mirror_snapshot() -> dict[str, tuple[int, int]]:
    if MIRROR is None:
        return {}
    return {
        str(path): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(MIRROR.rglob("*"))
    }


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


@functools.cache
def dataset(name: str) -> DatasetConfig:
    """The ``dataset`` group as ``conf/dataset/<name>.yaml`` composes it."""
    return compose_config([f"dataset={name}"]).dataset


def spec(name: str) -> DatasetSpec:
    return dataset(name).spec()


@pytest.fixture(scope="session")
def fmnist_train(cache_dir: str) -> TensorSplit:
    return load_tensors(spec("fashion_mnist"), "train", None, cache_dir)


# --- specs and errors (no data needed) ------------------------------------------------


def test_shakespeare_vocabulary_is_leafs_80_characters() -> None:
    shakespeare = spec("shakespeare")
    vocabulary = shakespeare.vocabulary
    assert len(vocabulary) == len(set(vocabulary)) == shakespeare.num_classes == 80
    # LEAF's unknown character is the last one, which the text never contains.
    assert vocabulary[-1] == "}" and vocabulary.startswith("\n !")


def test_config_error_message_is_one_line() -> None:
    error = ConfigError("strategy.name", "foo", "fedavg, fedhyper_g")
    assert str(error) == "invalid value for 'strategy.name': 'foo' (allowed: fedavg, fedhyper_g)"


def test_specs_travel_intact_and_hash_by_content() -> None:
    shakespeare = spec("shakespeare")
    assert dataclasses.replace(shakespeare) == shakespeare
    assert hash(dataclasses.replace(shakespeare)) == hash(shakespeare)
    assert hash(dataclasses.replace(shakespeare, input_shape=[40])) != hash(shakespeare)


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit, env = tmp_path / "explicit", tmp_path / "env"
    beside_cwd = tmp_path / "shared" / "data"
    for path in (explicit, env, beside_cwd, tmp_path / "work"):
        path.mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv(ENV_DATA_DIR, str(env))
    assert resolve_data_dir(str(explicit)) == explicit
    assert resolve_data_dir(str(tmp_path / "typo")) == env
    monkeypatch.delenv(ENV_DATA_DIR)
    found = resolve_data_dir(None)
    assert found is not None and found.resolve() == beside_cwd.resolve()


def test_missing_mirror_and_hub_names_both_places(tmp_path: Path) -> None:
    # A fresh interpreter: the hub libraries read the offline switches at import time.
    script = textwrap.dedent(
        """
        import dataclasses
        import sys
        from fedhyper.compose import compose_config
        from fedhyper.data import DatasetUnavailableError, load_split
        ghost = dataclasses.replace(
            compose_config().dataset.spec(), name="ghost", folder="ghost_folder",
            hub_name="fedhyper-tests/no-such-dataset")
        try:
            load_split(ghost, "train", None)
        except DatasetUnavailableError as error:
            print(error)
            sys.exit(3)
        """
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        ENV_DATA_DIR: str(tmp_path / "empty"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3, result.stderr
    message = result.stdout.strip()
    assert "\n" not in message
    assert str(tmp_path / "empty" / "ghost_folder" / "train.parquet") in message
    assert "fedhyper-tests/no-such-dataset" in message
    assert "FEDHYPER_DATA_DIR" in message and "dataset.data_dir" in message


# --- decoding and caching -------------------------------------------------------------


@needs_mirror
def test_fashion_mnist_train_decodes_exactly(fmnist_train: TensorSplit) -> None:
    assert fmnist_train.inputs.shape == (60_000, 1, 28, 28)
    assert fmnist_train.inputs.dtype == torch.uint8
    assert fmnist_train.labels.dtype == torch.int64
    assert torch.bincount(fmnist_train.labels).tolist() == [6000] * 10
    assert fmnist_train.natural_ids is None
    assert MIRROR is not None
    row = pq.read_table(MIRROR / "fashion_mnist" / "train.parquet").slice(123, 1).to_pylist()[0]
    expected = np.asarray(Image.open(io.BytesIO(row["image"]["bytes"])))
    assert np.array_equal(fmnist_train.inputs[123, 0].numpy(), expected)
    assert fmnist_train.labels[123].item() == row["label"]


@needs_mirror
@pytest.mark.parametrize(
    ("name", "split", "shape"),
    [
        ("fashion_mnist", "test", (1, 28, 28)),
        ("cifar10", "test", (3, 32, 32)),
        ("femnist", "train", (1, 28, 28)),
        ("femnist", "test", (1, 28, 28)),
    ],
)
def test_image_splits_decode(name: str, split: str, shape: tuple[int, ...], cache_dir: str) -> None:
    image = spec(name)
    decoded = load_tensors(image, split, None, cache_dir)
    rows = manifest_rows(image.folder or image.name, split)
    assert decoded.inputs.shape == (rows, *shape)
    assert decoded.inputs.dtype == torch.uint8
    assert decoded.labels.dtype == torch.int64
    assert decoded.labels.min() >= 0 and decoded.labels.max() == image.num_classes - 1
    normalised = to_float_inputs(image, decoded.inputs[:500])
    assert normalised.dtype == torch.float32
    # The spec's statistics fit the data: normalised pixels are roughly standardised.
    assert abs(normalised.mean().item()) < 0.2 and 0.8 < normalised.std().item() < 1.2


@needs_mirror
@pytest.mark.parametrize("split", ["train", "test"])
def test_shakespeare_encodes_characters(split: str, cache_dir: str) -> None:
    shakespeare = spec("shakespeare")
    decoded = load_tensors(shakespeare, split, None, cache_dir)
    rows = manifest_rows("shakespeare_leaf_tiny", split)
    assert decoded.inputs.shape == (rows, 80)
    assert decoded.labels.shape == (rows,)
    assert decoded.labels.dtype == torch.int64
    assert int(decoded.inputs.max()) < 80 and int(decoded.labels.max()) < 80
    assert decoded.natural_ids is not None and len(set(decoded.natural_ids)) == 152
    assert MIRROR is not None
    raw = pq.read_table(MIRROR / "shakespeare_leaf_tiny" / f"{split}.parquet").slice(0, 1)
    x, y = raw.column("x")[0].as_py(), raw.column("y")[0].as_py()
    assert "".join(shakespeare.vocabulary[i] for i in decoded.inputs[0].tolist()) == x
    assert shakespeare.vocabulary[decoded.labels[0]] == y


@needs_mirror
def test_disk_cache_is_keyed_by_content_and_reused(tmp_path: Path) -> None:
    assert MIRROR is not None
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    shutil.copytree(MIRROR / "femnist_leaf_subset", mirror / "femnist_leaf_subset")
    parquet = mirror / "femnist_leaf_subset" / "test.parquet"
    parquet.chmod(0o644)
    femnist = spec("femnist")
    first = load_tensors(femnist, "test", str(mirror), str(cache))
    assert load_tensors(femnist, "test", str(mirror), str(cache)) is first  # memoised
    (cache_file,) = cache.glob("*.pt")
    written = cache_file.stat().st_mtime_ns

    # Destroy the Parquet file: a fresh load can only succeed from the cache.
    original = parquet.read_bytes()
    parquet.write_bytes(b"not parquet")
    tensors_module._load_memoised.cache_clear()
    again = load_tensors(femnist, "test", str(mirror), str(cache))
    assert again is not first
    assert torch.equal(again.inputs, first.inputs) and torch.equal(again.labels, first.labels)
    assert again.natural_ids == first.natural_ids
    assert [p.name for p in cache.iterdir()] == [cache_file.name]
    assert cache_file.stat().st_mtime_ns == written

    # New content (a new manifest hash) gets a new cache entry.
    parquet.write_bytes(original)
    manifest = mirror / "femnist_leaf_subset" / "manifest.json"
    manifest.chmod(0o644)
    manifest.write_text(manifest.read_text().replace("295ba058", "00000000"))
    tensors_module._load_memoised.cache_clear()
    load_tensors(femnist, "test", str(mirror), str(cache))
    assert len(list(cache.glob("*.pt"))) == 2

    # So does a spec that decodes the same file differently; normalisation does not.
    load_tensors(
        dataclasses.replace(femnist, natural_id_column=""), "test", str(mirror), str(cache)
    )
    assert len(list(cache.glob("*.pt"))) == 3
    load_tensors(dataclasses.replace(femnist, mean=[0.5]), "test", str(mirror), str(cache))
    assert len(list(cache.glob("*.pt"))) == 3


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


# --- the client/server API ------------------------------------------------------------


def femnist_client(partition_id: int, fraction: float, cache_dir: str) -> ClientData:
    return client_data(
        spec("femnist"),
        partition_id,
        cache_dir=cache_dir,
        kind="natural",
        num_clients=105,
        seed=3,
        validation_fraction=fraction,
    )


def row_bytes(inputs: torch.Tensor) -> Counter[bytes]:
    return Counter(row.numpy().tobytes() for row in inputs)


@needs_mirror
def test_client_data_splits_train_and_validation(cache_dir: str) -> None:
    federated_module._partitions.cache_clear()
    client = femnist_client(4, 0.25, cache_dir)
    again = femnist_client(4, 0.25, cache_dir)
    femnist_client(5, 0.25, cache_dir)
    # Three clients served, one partitioning computed.
    assert federated_module._partitions.cache_info().misses == 1

    train_x, train_y = client.train.tensors
    val_x, val_y = client.validation.tensors
    assert train_x.dtype == torch.float32 and train_x.shape[1:] == (1, 28, 28)
    assert train_y.dtype == torch.int64 and val_y.dtype == torch.int64
    assert len(val_y) == int((len(train_y) + len(val_y)) * 0.25) > 0
    assert torch.equal(again.validation.tensors[0], val_x)

    # Train plus validation is exactly the client's partition (writer 4 in id order).
    decoded = load_tensors(spec("femnist"), "train", None, cache_dir)
    assert decoded.natural_ids is not None
    writer = sorted(set(decoded.natural_ids))[4]
    rows = torch.tensor([i for i, w in enumerate(decoded.natural_ids) if w == writer])
    expected = to_float_inputs(spec("femnist"), decoded.inputs[rows])
    assert row_bytes(torch.cat([train_x, val_x])) == row_bytes(expected)

    without = femnist_client(4, 0.0, cache_dir)
    assert len(without.validation) == 0
    assert len(without.train) == len(client.train) + len(client.validation)


@needs_mirror
def test_client_data_for_text_is_int64_indices(cache_dir: str) -> None:
    shakespeare = spec("shakespeare")
    client = client_data(shakespeare, 0, cache_dir=cache_dir, kind="iid", num_clients=100, seed=0)
    inputs, labels = client.train.tensors
    assert inputs.dtype == torch.int64 and inputs.shape[1:] == (80,)
    assert len(inputs) in (8770, 8771)
    assert labels.dtype == torch.int64


@needs_mirror
def test_test_data_is_full_or_a_fixed_subset(cache_dir: str) -> None:
    cifar10 = dataclasses.replace(dataset("cifar10"), cache_dir=cache_dir)
    full = federated_module.test_data(cifar10)
    assert len(full) == 10_000
    assert full.tensors[0].shape[1:] == (3, 32, 32) and full.tensors[0].dtype == torch.float32
    subset = federated_module.test_data(dataclasses.replace(cifar10, test_examples=500))
    repeat = federated_module.test_data(dataclasses.replace(cifar10, test_examples=500))
    assert len(subset) == 500
    assert torch.equal(subset.tensors[1], repeat.tensors[1])
    assert len(torch.unique(subset.tensors[1])) == 10


@needs_mirror
def test_natural_clients_need_natural_ids(cache_dir: str) -> None:
    with pytest.raises(ConfigError) as caught:
        num_natural_clients(spec("cifar10"), cache_dir=cache_dir)
    assert caught.value.key == "dataset.natural_id_column"


# Digests of client 0's train and validation tensors and of a 2,000-row test subset, as
# the data layer produced them when the datasets were Python tables: the yaml specs must
# give the same tensors, hence the same runs.
PINNED = {
    ("fashion_mnist", "dirichlet", 100): "726ae00a8426196d",
    ("shakespeare", "natural", 152): "2cc1c65f50d506da",
}


@needs_mirror
@pytest.mark.parametrize(("name", "kind", "clients"), list(PINNED))
def test_builtin_datasets_give_the_pinned_tensors(
    name: str, kind: str, clients: int, cache_dir: str
) -> None:
    config = dataclasses.replace(dataset(name), cache_dir=cache_dir, test_examples=2000)
    client = client_data(
        config.spec(),
        0,
        cache_dir=cache_dir,
        kind=kind,
        num_clients=clients,
        seed=0,
        validation_fraction=0.1,
    )
    digest = hashlib.sha256()
    for tensors in (client.train.tensors, client.validation.tensors, test_data(config).tensors):
        for tensor in tensors:
            digest.update(tensor.numpy().tobytes())
    assert digest.hexdigest()[:16] == PINNED[(name, kind, clients)]


# Keep last: checks that nothing above wrote into the mirror.
@needs_mirror
def test_mirror_is_never_written(mirror_before: dict[str, tuple[int, int]]) -> None:
    assert mirror_snapshot() == mirror_before
