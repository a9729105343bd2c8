"""Decoding the real splits to tensors, the disk cache, and a mirror never written."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from fedhyper.data import TensorSplit, load_tensors, to_float_inputs
from fedhyper.data import tensors as tensors_module
from tests.support.data import MIRROR, mirror_snapshot, needs_mirror, spec


def manifest_rows(folder: str, split: str) -> int:
    assert MIRROR is not None
    manifest = json.loads((MIRROR / folder / "manifest.json").read_text())
    return next(f["rows"] for f in manifest["files"] if Path(f["file"]).name == f"{split}.parquet")


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


# Keep last: checks that nothing above wrote into the mirror.
@needs_mirror
def test_mirror_is_never_written(mirror_before: dict[str, tuple[int, int]]) -> None:
    assert mirror_snapshot() == mirror_before
