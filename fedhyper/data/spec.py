"""Check a dataset's description (a :class:`~fedhyper.config.DatasetSpec`) field by field.

A dataset is configuration: ``conf/dataset/<name>.yaml`` fills a ``DatasetSpec``, and
:func:`check_spec` turns every field that cannot describe a loadable dataset into one
:class:`~fedhyper.errors.ConfigError` line, before any data is read.
"""

from __future__ import annotations

import re

from fedhyper.config import DatasetSpec
from fedhyper.errors import ConfigError

MODALITIES: tuple[str, ...] = ("image", "text")

#: Image channels the decoder produces (PIL modes ``L`` and ``RGB``).
IMAGE_CHANNELS: tuple[int, ...] = (1, 3)

# The name becomes part of cache file names.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_spec(spec: DatasetSpec) -> None:
    """Reject a dataset description that cannot be loaded as it says.

    Parameters
    ----------
    spec : DatasetSpec
        The ``dataset`` group of an experiment.

    Raises
    ------
    ConfigError
        On the first invalid field, under its key ``dataset.<field>``.

    """
    if not _NAME.fullmatch(spec.name):
        raise ConfigError("dataset.name", spec.name, "letters, digits, '_', '.' and '-'")
    if spec.modality not in MODALITIES:
        raise ConfigError("dataset.modality", spec.modality, ", ".join(MODALITIES))
    for key in ("input_column", "label_column"):
        if not getattr(spec, key):
            raise ConfigError(f"dataset.{key}", "", "the name of a column of the Parquet files")
    if spec.hub_name and not spec.hub_splits:
        raise ConfigError("dataset.hub_splits", [], "the splits the hub repository provides")
    if spec.modality == "image":
        _check_image(spec)
    else:
        _check_text(spec)


def _check_image(spec: DatasetSpec) -> None:
    shape = spec.input_shape
    if len(shape) != 3 or shape[0] not in IMAGE_CHANNELS or min(shape) < 1:
        raise ConfigError(
            "dataset.input_shape", shape, "[channels, height, width] with 1 or 3 channels"
        )
    if spec.num_classes < 2:
        raise ConfigError("dataset.num_classes", spec.num_classes, "an integer >= 2")
    for key in ("mean", "std"):
        values = getattr(spec, key)
        if len(values) != shape[0]:
            raise ConfigError(f"dataset.{key}", values, f"one number per channel ({shape[0]})")
    if min(spec.std) <= 0:
        raise ConfigError("dataset.std", spec.std, "numbers > 0")
    if spec.vocabulary:
        raise ConfigError("dataset.vocabulary", spec.vocabulary, "empty for images")


def _check_text(spec: DatasetSpec) -> None:
    if len(spec.input_shape) != 1 or spec.input_shape[0] < 1:
        raise ConfigError("dataset.input_shape", spec.input_shape, "[sequence_length]")
    vocabulary = spec.vocabulary
    # Indices are cached as uint8.
    if not 2 <= len(vocabulary) <= 256 or len(set(vocabulary)) != len(vocabulary):
        raise ConfigError(
            "dataset.vocabulary", vocabulary, "2 to 256 distinct characters, in index order"
        )
    if spec.num_classes != len(vocabulary):
        raise ConfigError(
            "dataset.num_classes", spec.num_classes, f"{len(vocabulary)}, the vocabulary's length"
        )
    for key in ("mean", "std"):
        if getattr(spec, key):
            raise ConfigError(f"dataset.{key}", getattr(spec, key), "empty for text")
