"""Mini-batches over tensors already in memory (or on the GPU)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import TensorDataset


class TensorBatches:
    """Shuffled mini-batches of a ``TensorDataset``, one index per batch.

    A client's data is already decoded and small, so indexing whole batches replaces
    ``DataLoader``'s per-example collation, which dominates a CPU step for small models.

    Parameters
    ----------
    dataset : TensorDataset
        ``(inputs, labels)``; batches stay on the tensors' device.
    batch_size : int
        Rows per batch (the last one may be smaller).
    generator : torch.Generator
        Source of the per-epoch permutation, for reproducible runs.

    """

    def __init__(self, dataset: TensorDataset, batch_size: int, generator: torch.Generator):
        self.dataset = dataset
        self.inputs, self.labels = dataset.tensors
        self.batch_size = batch_size
        self.generator = generator

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.randperm(len(self.labels), generator=self.generator)
        order = order.to(self.labels.device)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            yield self.inputs[batch], self.labels[batch]


def sequential_batches(
    dataset: TensorDataset, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(inputs, labels)`` slices of ``dataset`` in order (for evaluation).

    Parameters
    ----------
    dataset : TensorDataset
        ``(inputs, labels)``.
    batch_size : int
        Rows per slice.

    Yields
    ------
    tuple of Tensor
        Views into the dataset's tensors, no copy.

    """
    inputs, labels = dataset.tensors
    for start in range(0, len(labels), batch_size):
        yield inputs[start : start + batch_size], labels[start : start + batch_size]
