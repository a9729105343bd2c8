"""The 12x12 Fashion-MNIST task of MAID's logistic-regression experiment.

Images are decoded by the project's loader (:func:`fedhyper.data.load_tensors`),
scaled to ``[0, 1]`` as in the paper (no mean/std normalisation), and downsampled
from 28x28 to 12x12 by area averaging (``torch.nn.functional.interpolate`` with
``mode="area"``, i.e. adaptive average pooling). The 144 pixels are the features,
with no bias column, so the weights are ``144 × 10``: 1,440 entries, one L2 weight
each.

The official training split is shuffled once; its first rows are the validation
part (the upper level), the next rows the training part (the lower level), split
over clients by a Dirichlet partition of the labels. The test split is only for
reporting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)

from fedhyper.bilevel.logistic import LabelledData
from fedhyper.compose import compose_config
from fedhyper.data import load_tensors, partition_indices
from fedhyper.errors import ConfigError

DATASET = "fashion_mnist"
SIDE = 12


@dataclass(frozen=True)
class BilevelTask:
    """Data of a bilevel task.

    Attributes
    ----------
    shards : list of LabelledData
        Each client's training rows (the lower level).
    validation : LabelledData
        The upper level's rows, disjoint from the training rows.
    test : LabelledData
        Held-out rows for reporting only.

    """

    shards: list[LabelledData]
    validation: LabelledData
    test: LabelledData


def downsample(images: torch.Tensor) -> torch.Tensor:
    """Turn ``uint8`` ``N × 1 × 28 × 28`` images into ``float64`` ``N × 144`` features.

    Pixels are scaled to ``[0, 1]``, then each 12x12 output pixel is the mean of the
    input area it covers.
    """
    scaled = images.to(torch.float64) / 255.0
    return F.interpolate(scaled, size=(SIDE, SIDE), mode="area").reshape(len(images), -1)


def load_fashion12(
    *,
    train_examples: int,
    validation_examples: int,
    num_clients: int,
    alpha: float,
    seed: int = 0,
    test_examples: int | None = None,
    data_dir: str | None = None,
    cache_dir: str | None = None,
) -> BilevelTask:
    """Build the 12x12 task from the Fashion-MNIST mirror (or hub).

    Parameters
    ----------
    train_examples : int
        Rows of the training part (the lower level).
    validation_examples : int
        Rows of the validation part (the upper level).
    num_clients : int
        Clients of the Dirichlet split of the training part.
    alpha : float
        Dirichlet concentration; smaller is more skewed.
    seed : int
        Seed of the shuffle and of the partition.
    test_examples : int, optional
        Rows of the test split to keep (its first rows); all by default.
    data_dir, cache_dir : str, optional
        See :func:`fedhyper.data.load_tensors`.

    Returns
    -------
    BilevelTask
        Shards, validation and test data.

    Raises
    ------
    ConfigError
        If the sizes do not fit in the splits.

    """
    spec = compose_config([f"dataset={DATASET}"]).dataset.spec()
    train = load_tensors(spec, "train", data_dir, cache_dir)
    test = load_tensors(spec, "test", data_dir, cache_dir)
    if validation_examples < 1:
        raise ConfigError("validation_examples", validation_examples, "an integer >= 1")
    available = len(train) - validation_examples
    if not 1 <= train_examples <= available:
        raise ConfigError("train_examples", train_examples, f"1..{available}")
    if test_examples is not None and not 1 <= test_examples <= len(test):
        raise ConfigError("test_examples", test_examples, f"1..{len(test)}")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(train)))
    validation_rows = order[:validation_examples]
    training_rows = order[validation_examples : validation_examples + train_examples]
    features = downsample(train.inputs[training_rows])
    labels = train.labels[training_rows]
    client_rows = partition_indices(spec, labels.numpy(), "dirichlet", num_clients, alpha, 1, seed)
    shards = [
        LabelledData(features[torch.from_numpy(rows)], labels[torch.from_numpy(rows)])
        for rows in client_rows
    ]
    test_rows = slice(None, test_examples)
    return BilevelTask(
        shards=shards,
        validation=LabelledData(
            downsample(train.inputs[validation_rows]), train.labels[validation_rows]
        ),
        test=LabelledData(downsample(test.inputs[test_rows]), test.labels[test_rows]),
    )
