"""Data layer: datasets, decoding and caching, partitioning, per-client data.

Clients and the server should only need :func:`client_data`, :func:`test_data` and
:func:`num_natural_clients`; a dataset is a :class:`~fedhyper.config.DatasetSpec`
(``conf/dataset/<name>.yaml``), checked by :func:`check_spec`.
"""

from fedhyper.data.federated import ClientData, client_data, num_natural_clients, test_data
from fedhyper.data.partition import PARTITION_KINDS, partition_indices
from fedhyper.data.source import load_split, resolve_data_dir
from fedhyper.data.spec import check_spec
from fedhyper.data.tensors import TensorSplit, load_tensors, to_float_inputs, to_model_inputs
from fedhyper.errors import ConfigError, DatasetUnavailableError

__all__ = [
    "PARTITION_KINDS",
    "ClientData",
    "ConfigError",
    "DatasetUnavailableError",
    "TensorSplit",
    "check_spec",
    "client_data",
    "load_split",
    "load_tensors",
    "num_natural_clients",
    "partition_indices",
    "resolve_data_dir",
    "test_data",
    "to_float_inputs",
    "to_model_inputs",
]
