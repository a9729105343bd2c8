"""Reject an invalid experiment before any data is loaded or any client trains."""

from __future__ import annotations

from fedhyper.config import ExperimentConfig
from fedhyper.data.registry import DATASETS
from fedhyper.errors import ConfigError
from fedhyper.models import MODEL_NAMES

STRATEGY_NAMES = ("fedavg", "fedhyper_g")
"""Every strategy the ServerApp can build (``strategies.factory`` covers each)."""

PARTITION_KINDS = ("iid", "dirichlet", "pathological", "natural")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("ray",)
MODELS_FOR_DATASET = {
    "fashion_mnist": ("cnn",),
    "femnist": ("cnn",),
    "cifar10": ("cifar_cnn", "resnet18_gn"),
    "shakespeare": ("char_lstm",),
}


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, value, ", ".join(allowed))


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(key, value, "a number > 0")


def _at_least(key: str, value: float, low: float) -> None:
    if not value >= low:
        raise ConfigError(key, value, f"a number >= {low:g}")


def _in_range(key: str, value: float, low: float, high: float, *, closed_high: bool) -> None:
    upper_ok = value <= high if closed_high else value < high
    if not (low <= value and upper_ok):
        bracket = "]" if closed_high else ")"
        raise ConfigError(key, value, f"a number in [{low:g}, {high:g}{bracket}")


def validate(config: ExperimentConfig) -> None:
    """Check every setting of an experiment against its allowed values.

    Parameters
    ----------
    config : ExperimentConfig
        The resolved experiment.

    Raises
    ------
    ConfigError
        On the first invalid setting, naming its key and the allowed values.

    """
    dataset, partition, client, strategy = (
        config.dataset,
        config.partition,
        config.client,
        config.strategy,
    )
    _at_least("num_rounds", config.num_rounds, 1)
    _in_range("target_accuracy", config.target_accuracy, 0.0, 1.0, closed_high=True)

    _one_of("dataset.name", dataset.name, tuple(DATASETS))
    _in_range(
        "dataset.validation_fraction", dataset.validation_fraction, 0.0, 1.0, closed_high=False
    )
    _at_least("dataset.test_examples", dataset.test_examples, 0)

    _one_of("model.name", config.model.name, MODEL_NAMES)
    _one_of("model.name", config.model.name, MODELS_FOR_DATASET[dataset.name])
    _at_least("model.hidden_size", config.model.hidden_size, 1)

    _one_of("partition.kind", partition.kind, PARTITION_KINDS)
    if partition.kind == "natural" and DATASETS[dataset.name].natural_id_column is None:
        raise ConfigError(
            "partition.kind", "natural", "iid, dirichlet, pathological (no natural clients)"
        )
    _at_least("partition.num_clients", partition.num_clients, 1)
    _positive("partition.alpha", partition.alpha)
    _in_range(
        "partition.classes_per_client",
        partition.classes_per_client,
        1,
        DATASETS[dataset.name].num_classes,
        closed_high=True,
    )

    _one_of("client.optimizer", client.optimizer, OPTIMIZERS)
    _positive("client.lr", client.lr)
    _in_range("client.momentum", client.momentum, 0.0, 1.0, closed_high=False)
    _at_least("client.weight_decay", client.weight_decay, 0.0)
    _at_least("client.local_epochs", client.local_epochs, 1)
    _at_least("client.batch_size", client.batch_size, 1)
    _at_least("client.max_steps", client.max_steps, 0)
    _one_of("client.device", client.device, DEVICES)

    _one_of("strategy.name", strategy.name, STRATEGY_NAMES)
    _in_range(
        "strategy.clients_per_round",
        strategy.clients_per_round,
        1,
        partition.num_clients,
        closed_high=True,
    )
    _in_range(
        "strategy.evaluate_clients_per_round",
        strategy.evaluate_clients_per_round,
        0,
        partition.num_clients,
        closed_high=True,
    )
    _positive("strategy.global_lr_min", strategy.global_lr_min)
    if strategy.global_lr_min > strategy.global_lr_max:
        raise ConfigError(
            "strategy.global_lr_max",
            strategy.global_lr_max,
            f"a number >= strategy.global_lr_min ({strategy.global_lr_min:g})",
        )
    _in_range(
        "strategy.global_lr",
        strategy.global_lr,
        strategy.global_lr_min,
        strategy.global_lr_max,
        closed_high=True,
    )
    _at_least("strategy.hyper_lr", strategy.hyper_lr, 0.0)

    _one_of("simulation.backend", config.simulation.backend, BACKENDS)
    _positive("simulation.num_cpus_per_client", config.simulation.num_cpus_per_client)
    _at_least("simulation.num_gpus_per_client", config.simulation.num_gpus_per_client, 0.0)
    _positive("simulation.round_timeout_s", config.simulation.round_timeout_s)
