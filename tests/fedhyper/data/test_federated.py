"""Per-client and test data from the real offline mirror (``../shared/data``)."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter

import pytest
import torch

from fedhyper.data import (
    ClientData,
    ConfigError,
    client_data,
    load_tensors,
    num_natural_clients,
    test_data,
    to_float_inputs,
)
from fedhyper.data import federated as federated_module
from tests.support.data import dataset, needs_mirror, spec

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
