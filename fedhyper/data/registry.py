"""Static description of every dataset FedHyper can load.

One :class:`DatasetSpec` per dataset says where its data lives (offline mirror
folder, Hugging Face hub name), which columns hold inputs, labels and natural client
ids, and what the decoded tensors look like. Nothing here touches the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedhyper.errors import ConfigError

Modality = Literal["image", "text"]

#: LEAF's Shakespeare alphabet (``ALL_LETTERS`` in LEAF's ``language_utils.py``).
SHAKESPEARE_VOCAB = (
    "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
)
#: Index given to characters outside the alphabet (e.g. ``$``, which occurs 81 times in
#: the mirror's train windows). LEAF one-hot encodes ``ALL_LETTERS.find(c) == -1`` as
#: ``vec[-1] = 1``, i.e. the last letter ``}``; we keep that index so labels match LEAF,
#: and ``}`` never occurs in the Shakespeare text, so it acts as an unknown token.
SHAKESPEARE_UNKNOWN_INDEX = len(SHAKESPEARE_VOCAB) - 1
SHAKESPEARE_SEQ_LEN = 80


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives and what its decoded tensors look like.

    Attributes
    ----------
    name : str
        Key in :data:`DATASETS` (the value of ``dataset.name`` in the config).
    mirror_folder : str
        Folder under the data directory holding ``<split>.parquet`` files.
    hub_name : str
        Hugging Face hub repository used when no mirror is found.
    modality : {"image", "text"}
        Images decode to ``uint8`` CxHxW; text to character indices.
    input_column, label_column : str
        Column names in the mirror (and, after ``hub_renames``, on the hub).
    natural_id_column : str or None
        Column naming each row's natural client (writer, role); ``None`` if absent.
    num_classes : int
        Number of label values (for Shakespeare the vocabulary size).
    input_shape : tuple of int
        Shape of one decoded input: ``(C, H, W)`` or ``(sequence_length,)``.
    mean, std : tuple of float or None
        Per-channel normalisation on the ``[0, 1]`` scale; ``None`` for text.
    hub_splits : tuple of str
        Splits the hub repository provides (the mirror may have more).
    hub_renames : tuple of (str, str)
        ``(hub column, mirror column)`` pairs applied after a hub load.

    """

    name: str
    mirror_folder: str
    hub_name: str
    modality: Modality
    input_column: str
    label_column: str
    natural_id_column: str | None
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    hub_splits: tuple[str, ...] = ("train", "test")
    hub_renames: tuple[tuple[str, str], ...] = ()


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="fashion_mnist",
            mirror_folder="fashion_mnist",
            hub_name="zalando-datasets/fashion_mnist",
            modality="image",
            input_column="image",
            label_column="label",
            natural_id_column=None,
            num_classes=10,
            input_shape=(1, 28, 28),
            # Published training-set statistics (the mirror is bit-exact).
            mean=(0.2860,),
            std=(0.3530,),
        ),
        DatasetSpec(
            name="cifar10",
            mirror_folder="cifar10_jpeg",
            hub_name="uoft-cs/cifar10",
            modality="image",
            input_column="img",
            label_column="label",
            natural_id_column=None,
            num_classes=10,
            input_shape=(3, 32, 32),
            # Published statistics of the original; the JPEG mirror's std is ~1% lower,
            # close enough that one constant serves both sources.
            mean=(0.4914, 0.4822, 0.4465),
            std=(0.2470, 0.2435, 0.2616),
        ),
        DatasetSpec(
            name="femnist",
            mirror_folder="femnist_leaf_subset",
            hub_name="flwrlabs/femnist",
            modality="image",
            input_column="image",
            label_column="label",
            natural_id_column="writer_id",
            num_classes=62,
            input_shape=(1, 28, 28),
            # Measured on the mirror's train split (white background, dark ink).
            mean=(0.9612,),
            std=(0.1656,),
            # The hub copy is one 814k-row train split whose label column is "character".
            hub_splits=("train",),
            hub_renames=(("character", "label"),),
        ),
        DatasetSpec(
            name="shakespeare",
            mirror_folder="shakespeare_leaf_tiny",
            hub_name="flwrlabs/shakespeare",
            modality="text",
            input_column="x",
            label_column="y",
            natural_id_column="character_id",
            num_classes=len(SHAKESPEARE_VOCAB),
            input_shape=(SHAKESPEARE_SEQ_LEN,),
            hub_splits=("train",),
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    """Return the spec of dataset ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.

    Returns
    -------
    DatasetSpec
        The dataset's description.

    Raises
    ------
    ConfigError
        If ``name`` is not a known dataset (key ``dataset.name``).

    """
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError("dataset.name", name, ", ".join(DATASETS)) from None
