"""Decode a dataset split to tensors once, cache them on disk, memoise them in-process.

Decoding 60,000 PNGs takes about a second, but a simulation starts many worker
processes, each of which would otherwise decode again; the ``.pt`` cache makes every
later start a memory-mapped load instead. Inputs stay ``uint8`` in the cache and in
memory (a quarter of float32's size, an eighth of int64's) and are converted per
client by :func:`to_model_inputs`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import torch

from fedhyper.config import DatasetSpec
from fedhyper.data.source import content_fingerprint, load_split, mirror_file, resolve_data_dir

if TYPE_CHECKING:
    import datasets

ENV_CACHE_DIR = "FEDHYPER_CACHE_DIR"
# Part of every cache file name: bump it whenever decoding changes so that files
# written by older code are ignored instead of loaded.
CACHE_FORMAT = 1
# The spec fields that determine the decoded tensors: part of every cache key, so that
# a changed column, shape or vocabulary never loads tensors decoded under another.
_DECODING_FIELDS = (
    "hub_label_column",
    "modality",
    "input_column",
    "label_column",
    "natural_id_column",
    "num_classes",
    "input_shape",
    "vocabulary",
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSplit:
    """A decoded dataset split.

    The tensors are shared by every caller in the process (see :func:`load_tensors`);
    index or copy them, never modify them in place.

    Attributes
    ----------
    inputs : torch.Tensor
        ``uint8``; NxCxHxW pixels for images, NxL vocabulary indices for text.
    labels : torch.Tensor
        ``int64`` class indices, shape N.
    natural_ids : list of str or None
        Each row's natural client id (writer, role), or ``None`` if the dataset has none.

    """

    inputs: torch.Tensor
    labels: torch.Tensor
    natural_ids: list[str] | None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def resolve_cache_dir(configured: str | None) -> Path:
    """Return the tensor cache directory.

    The first set of: ``configured``, ``$FEDHYPER_CACHE_DIR``, ``~/.cache/fedhyper``.
    """
    chosen = configured or os.environ.get(ENV_CACHE_DIR) or "~/.cache/fedhyper"
    return Path(chosen).expanduser()


def load_tensors(
    spec: DatasetSpec, split: str, data_dir: str | None = None, cache_dir: str | None = None
) -> TensorSplit:
    """Return a split as tensors, decoding it at most once per cache directory.

    Parameters
    ----------
    spec : DatasetSpec
        The dataset.
    split : str
        Split name, e.g. ``"train"``.
    data_dir : str or None
        Explicit data directory (see :func:`~fedhyper.data.source.resolve_data_dir`).
    cache_dir : str or None
        Explicit cache directory (see :func:`resolve_cache_dir`).

    Returns
    -------
    TensorSplit
        The decoded split; the same object for repeated calls in one process.

    Raises
    ------
    DatasetUnavailableError
        If the split is neither in the mirror nor on the hub.

    """
    root = resolve_data_dir(data_dir)
    # Memoise on resolved paths so that env or cwd changes cannot return stale data.
    return _load_memoised(
        spec, split, str(root) if root else None, str(resolve_cache_dir(cache_dir))
    )


@functools.lru_cache(maxsize=16)
def _load_memoised(
    spec: DatasetSpec, split: str, data_dir: str | None, cache_dir: str
) -> TensorSplit:
    parquet = mirror_file(spec, split, data_dir)
    dataset = None
    if parquet is not None:
        # The manifest's hash identifies the file, so a cache hit never reads the Parquet.
        fingerprint = content_fingerprint(parquet)
    else:
        dataset = load_split(spec, split, data_dir)  # hub copy, or DatasetUnavailableError
        files = [Path(entry["filename"]) for entry in dataset.cache_files]
        fingerprint = "hub:" + "|".join(content_fingerprint(file) for file in files)
    cache_file = _cache_file(Path(cache_dir), spec, split, fingerprint)
    cached = _read_cache(cache_file)
    if cached is not None:
        return cached
    if dataset is None:
        dataset = load_split(spec, split, data_dir)
    return _write_cache(cache_file, _decode(spec, dataset))


def _cache_file(cache_dir: Path, spec: DatasetSpec, split: str, fingerprint: str) -> Path:
    decoding = json.dumps({key: getattr(spec, key) for key in _DECODING_FIELDS}, sort_keys=True)
    digest = hashlib.sha256(f"{fingerprint}|{decoding}".encode()).hexdigest()[:16]
    return cache_dir / f"{spec.name}-{split}-{digest}-v{CACHE_FORMAT}.pt"


def _read_cache(path: Path) -> TensorSplit | None:
    if not path.is_file():
        return None
    try:
        # mmap: worker processes on one machine share the page cache instead of
        # each holding a private copy of the dataset.
        payload = torch.load(path, mmap=True, weights_only=True)
        natural_ids = None
        if "natural_id_names" in payload:
            names = np.asarray(payload["natural_id_names"], dtype=object)
            natural_ids = names[payload["natural_id_codes"].numpy()].tolist()
        return TensorSplit(payload["inputs"], payload["labels"], natural_ids)
    except (OSError, RuntimeError, KeyError, pickle.UnpicklingError) as exc:
        logger.warning("ignoring unreadable tensor cache %s (%s); decoding again", path, exc)
        return None


def _write_cache(path: Path, split: TensorSplit) -> TensorSplit:
    payload: dict[str, object] = {"inputs": split.inputs, "labels": split.labels}
    if split.natural_ids is not None:
        # Codes plus a name table: far smaller and faster to load than 10^5-10^6
        # pickled strings.
        encoded = pa.array(split.natural_ids, pa.string()).dictionary_encode()
        payload["natural_id_names"] = encoded.dictionary.to_pylist()
        payload["natural_id_codes"] = torch.from_numpy(encoded.indices.to_numpy().astype(np.int32))
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file and rename: concurrent workers never see a half file.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return split


def _decode(spec: DatasetSpec, dataset: datasets.Dataset) -> TensorSplit:
    table = dataset.with_format("arrow")[:]
    if spec.modality == "image":
        inputs = _decode_images(spec, table.column(spec.input_column))
        # np.array copies: Arrow's zero-copy NumPy views are read-only.
        labels = torch.from_numpy(np.array(table.column(spec.label_column), dtype=np.int64))
    else:
        inputs = _encode_text(spec, table.column(spec.input_column), spec.input_shape[0])
        labels = _encode_text(spec, table.column(spec.label_column), 1).reshape(-1)
        labels = labels.to(torch.int64)
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < spec.num_classes:
        raise ValueError(f"{spec.name}: labels outside 0..{spec.num_classes - 1}")
    natural_ids = None
    if spec.natural_id_column:
        natural_ids = table.column(spec.natural_id_column).to_pylist()
    return TensorSplit(inputs, labels, natural_ids)


def _decode_images(spec: DatasetSpec, column: pa.ChunkedArray) -> torch.Tensor:
    """Decode encoded images (PNG or JPEG) into one preallocated uint8 tensor."""
    # Imported here: only decoding needs it, not a client reading the tensor cache.
    from PIL import Image

    channels, height, width = spec.input_shape
    mode = "L" if channels == 1 else "RGB"
    # Image columns are struct<bytes, path>; the bytes hold the encoded file.
    blobs = pc.struct_field(column, "bytes").to_pylist()
    # PIL yields H x W (x C); fill a channels-last array, transpose once at the end.
    out = np.empty((len(blobs), height, width, channels), dtype=np.uint8)
    for row, blob in enumerate(blobs):
        if blob is None:
            raise ValueError(f"{spec.name}: row {row} has no embedded image bytes")
        with Image.open(io.BytesIO(blob)) as image:
            pixels = np.asarray(image if image.mode == mode else image.convert(mode))
        if pixels.shape[:2] != (height, width):
            raise ValueError(f"{spec.name}: row {row} is {pixels.shape[1]}x{pixels.shape[0]}")
        out[row] = pixels.reshape(height, width, channels)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _vocabulary_table(vocabulary: str) -> npt.NDArray[np.int64]:
    """Map every code point up to the vocabulary's largest to its index (unknown: last)."""
    codes = [ord(char) for char in vocabulary]
    table = np.full(max(codes) + 1, len(vocabulary) - 1, dtype=np.int64)
    table[codes] = np.arange(len(vocabulary))
    return table


def _encode_text(spec: DatasetSpec, column: pa.ChunkedArray, length: int) -> torch.Tensor:
    """Turn equal-length strings into an Nxlength uint8 tensor of vocabulary indices."""
    lengths = pc.utf8_length(column)
    if len(column) and (pc.min(lengths).as_py() != length or pc.max(lengths).as_py() != length):
        raise ValueError(f"{spec.name}: expected strings of exactly {length} characters")
    # One code point per element, whatever the characters: vectorised lookup below.
    code_points = np.frombuffer("".join(column.to_pylist()).encode("utf-32-le"), np.uint32)
    table = _vocabulary_table(spec.vocabulary)
    unknown = len(spec.vocabulary) - 1
    indices = np.where(
        code_points < len(table), table[np.minimum(code_points, len(table) - 1)], unknown
    )
    return torch.from_numpy(indices.astype(np.uint8).reshape(len(column), length))


def to_float_inputs(spec: DatasetSpec, inputs: torch.Tensor) -> torch.Tensor:
    """Scale ``uint8`` images to ``[0, 1]`` and normalise with the spec's mean and std.

    Parameters
    ----------
    spec : DatasetSpec
        An image dataset's spec.
    inputs : torch.Tensor
        ``uint8`` tensor of shape NxCxHxW.

    Returns
    -------
    torch.Tensor
        ``float32`` tensor of the same shape.

    """
    if not spec.mean or not spec.std:
        raise ValueError(f"{spec.name} has no image normalisation")
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    return inputs.to(torch.float32).div_(255.0).sub_(mean).div_(std)


def to_model_inputs(spec: DatasetSpec, inputs: torch.Tensor) -> torch.Tensor:
    """Convert cached ``uint8`` inputs to what a model consumes.

    Parameters
    ----------
    spec : DatasetSpec
        The dataset's spec.
    inputs : torch.Tensor
        Rows of :attr:`TensorSplit.inputs`.

    Returns
    -------
    torch.Tensor
        Normalised ``float32`` images, or ``int64`` character indices for text
        (what ``torch.nn.Embedding`` expects).

    """
    if spec.modality == "image":
        return to_float_inputs(spec, inputs)
    return inputs.to(torch.int64)
