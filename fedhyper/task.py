"""What a client needs to know to train: the wire format between ServerApp and ClientApp.

The server flattens the relevant parts of an :class:`~fedhyper.config.ExperimentConfig`
into scalar key/value pairs (a Flower ``ConfigRecord`` carries them); the client reads
them back into a :class:`ClientTask`. Keeping this in one place means a deployed
SuperNode needs no copy of the experiment's configuration files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fedhyper.config import DatasetSpec, ExperimentConfig
from fedhyper.data.federated import ClientData, client_data

ARRAYS_KEY = "arrays"
"""Record holding the model weights, in messages both ways."""

PREVIOUS_DELTA_KEY = "previous-delta"
"""Training-message record holding Δ_{t−1} (unscaled) for FedHyper-CL clients."""

PARTITION_ID_KEY = "partition-id"
"""Node-config key of a SuperNode's partition (the simulation engine sets it), and the
metric a node answers the server's query with: the server samples clients by partition,
so that the same seed picks the same clients whatever node ids a run was given."""

ATTEMPT_KEY = "attempt"
"""Training-config key: 0 for a round's first try, 1, 2, ... for its retries."""

DATASET_PREFIX = "dataset."
"""Prefix of the training-config keys that carry the dataset's spec, one per field."""


@dataclass(frozen=True)
class ClientTask:
    """Everything a client reads from the server's training or evaluation message.

    ``data_dir`` and ``cache_dir`` are empty strings when the client should use its own
    defaults (a SuperNode's node-config may name its local directory instead). The
    dataset's spec travels with the task, so a client needs no configuration files.
    """

    dataset: DatasetSpec
    data_dir: str
    cache_dir: str
    validation_fraction: float
    partition_kind: str
    num_partitions: int
    alpha: float
    classes_per_client: int
    seed: int
    model: str
    hidden_size: int
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    local_epochs: int
    batch_size: int
    max_steps: int
    device: str
    client_rule: str
    cl_coupling: float
    cl_skip_first_batch: bool
    cl_carry: bool
    lr_min_factor: float
    lr_max_factor: float

    @classmethod
    def from_experiment(cls, config: ExperimentConfig) -> ClientTask:
        """Extract the client's part of an experiment.

        Parameters
        ----------
        config : ExperimentConfig
            The resolved experiment.

        Returns
        -------
        ClientTask
            The task to send to every client.

        """
        dataset, partition, client = config.dataset, config.partition, config.client
        strategy = config.strategy
        return cls(
            dataset=dataset.spec(),
            data_dir=dataset.data_dir or "",
            cache_dir=dataset.cache_dir or "",
            validation_fraction=dataset.validation_fraction,
            partition_kind=partition.kind,
            num_partitions=partition.num_clients,
            alpha=partition.alpha,
            classes_per_client=partition.classes_per_client,
            seed=config.seed,
            model=config.model.name,
            hidden_size=config.model.hidden_size,
            optimizer=client.optimizer,
            lr=client.lr,
            momentum=client.momentum,
            weight_decay=client.weight_decay,
            local_epochs=client.local_epochs,
            batch_size=client.batch_size,
            max_steps=client.max_steps,
            device=client.device,
            client_rule=strategy.client_rule,
            # The reference's c = 0.1 / (clients sampled this round).
            cl_coupling=strategy.cl_coupling / strategy.clients_per_round,
            cl_skip_first_batch=strategy.cl_skip_first_batch,
            cl_carry=strategy.cl_carry,
            lr_min_factor=strategy.local_lr_min_factor,
            lr_max_factor=strategy.local_lr_max_factor,
        )

    def to_mapping(self) -> dict[str, Any]:
        """Flatten to scalars and lists of scalars, as a Flower ``ConfigRecord`` takes them."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "dataset"}
        spec = {DATASET_PREFIX + f.name: getattr(self.dataset, f.name) for f in fields(DatasetSpec)}
        return {**values, **spec}

    def partition(self, partition_id: int, data_dir: str | None = None) -> ClientData:
        """Load one client's share of the partitioned dataset this task describes.

        Parameters
        ----------
        partition_id : int
            Which client, in ``[0, num_partitions)``.
        data_dir : str or None
            A directory that overrides the task's (a SuperNode's own mirror).

        Returns
        -------
        ClientData
            The client's train and validation splits.

        """
        return client_data(
            self.dataset,
            partition_id,
            data_dir=data_dir or self.data_dir or None,
            cache_dir=self.cache_dir or None,
            kind=self.partition_kind,
            num_clients=self.num_partitions,
            alpha=self.alpha,
            classes_per_client=self.classes_per_client,
            seed=self.seed,
            validation_fraction=self.validation_fraction,
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ClientTask:
        """Read a task back from a received record, ignoring keys it does not know.

        Parameters
        ----------
        values : mapping
            The received ``ConfigRecord`` (it also holds per-round keys such as
            ``server-round``).

        Returns
        -------
        ClientTask
            The task; per-round overrides such as a scheduled ``lr`` are included.

        """
        spec = DatasetSpec(**{f.name: values[DATASET_PREFIX + f.name] for f in fields(DatasetSpec)})
        own = {f.name: values[f.name] for f in fields(cls) if f.name != "dataset"}
        return cls(dataset=spec, **own)
