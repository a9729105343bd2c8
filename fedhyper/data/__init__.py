"""Data layer: datasets, decoding and caching, partitioning, per-client data.

Clients and the server should only need :func:`client_data`, :func:`test_data`,
:func:`num_natural_clients` and the dataset specs in :data:`DATASETS`.
"""

from fedhyper.data.federated import ClientData, client_data, num_natural_clients, test_data
from fedhyper.data.partition import PARTITION_KINDS, partition_indices
from fedhyper.data.registry import (
    DATASETS,
    SHAKESPEARE_UNKNOWN_INDEX,
    SHAKESPEARE_VOCAB,
    DatasetSpec,
    get_spec,
)
from fedhyper.data.source import load_split, resolve_data_dir
from fedhyper.data.tensors import TensorSplit, load_tensors, to_float_inputs, to_model_inputs
from fedhyper.errors import ConfigError, DatasetUnavailableError

__all__ = [
    "DATASETS",
    "PARTITION_KINDS",
    "SHAKESPEARE_UNKNOWN_INDEX",
    "SHAKESPEARE_VOCAB",
    "ClientData",
    "ConfigError",
    "DatasetSpec",
    "DatasetUnavailableError",
    "TensorSplit",
    "client_data",
    "get_spec",
    "load_split",
    "load_tensors",
    "num_natural_clients",
    "partition_indices",
    "resolve_data_dir",
    "test_data",
    "to_float_inputs",
    "to_model_inputs",
]
