"""Data layer: datasets, decoding and caching, partitioning, per-client data.

Clients and the server should only need :func:`client_data`, :func:`test_data` and
:func:`num_natural_clients`; a dataset is a :class:`~fedhyper.config.DatasetSpec`
(``conf/dataset/<name>.yaml``), checked by :func:`check_spec`.

The names below are imported on first use: importing one submodule (as a ClientApp
does) must not import the others' libraries.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedhyper.data.federated import (
        ClientData,
        client_data,
        num_natural_clients,
        test_data,
    )
    from fedhyper.data.partition import PARTITION_KINDS, partition_indices
    from fedhyper.data.source import load_split, resolve_data_dir
    from fedhyper.data.spec import check_spec
    from fedhyper.data.tensors import TensorSplit, load_tensors, to_float_inputs, to_model_inputs
    from fedhyper.errors import ConfigError, DatasetUnavailableError

_HOMES = {
    "fedhyper.data.federated": ("ClientData", "client_data", "num_natural_clients", "test_data"),
    "fedhyper.data.partition": ("PARTITION_KINDS", "partition_indices"),
    "fedhyper.data.source": ("load_split", "resolve_data_dir"),
    "fedhyper.data.spec": ("check_spec",),
    "fedhyper.data.tensors": ("TensorSplit", "load_tensors", "to_float_inputs", "to_model_inputs"),
    "fedhyper.errors": ("ConfigError", "DatasetUnavailableError"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

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


def __getattr__(name: str) -> object:
    """Import a name of ``__all__`` from its module on first use."""
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME_OF[name]), name)
