"""Reject an invalid experiment before any data is loaded or any client trains."""

from __future__ import annotations

import math

from fedhyper.config import ExperimentConfig
from fedhyper.data.partition import PARTITION_KINDS
from fedhyper.data.spec import check_spec
from fedhyper.errors import ConfigError
from fedhyper.faults import POISON_KINDS
from fedhyper.models import choose_model
from fedhyper.training import DEVICE_CHOICES, OPTIMIZER_NAMES

RULE_STRATEGY_NAMES = (
    "fedhyper_g",
    "fedhyper_gm",
    "fedhyper_sl",
    "fedhyper_cl",
    "fedhyper",
    "decay_g",
    "decay_sl",
    "fedexp",
)
"""Strategies built on a :mod:`fedhyper.rules` server rule; they can drive FedHyper-CL."""

STRATEGY_NAMES = (
    "fedavg",
    "fedavgm",
    "fedadam",
    "fedyogi",
    "fedadagrad",
    *RULE_STRATEGY_NAMES,
    "universal_fedadam",
    "universal_fedavgm",
    "universal_fedexp",
)
"""Every strategy the ServerApp can build (``strategies.factory`` covers each)."""

CLIENT_RULES = ("constant", "hypergradient")

BACKENDS = ("ray",)


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, value, ", ".join(allowed))


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(key, value, "a number > 0")


def _at_least(key: str, value: float, low: float) -> None:
    if not value >= low:
        raise ConfigError(key, value, f"a number >= {low:g}")


def _ordered(low_key: str, low: float, high_key: str, high: float) -> None:
    if low > high:
        raise ConfigError(high_key, high, f"a number >= {low_key} ({low:g})")


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

    check_spec(dataset)
    _in_range(
        "dataset.validation_fraction", dataset.validation_fraction, 0.0, 1.0, closed_high=False
    )
    _at_least("dataset.test_examples", dataset.test_examples, 0)

    choose_model(dataset, config.model.name)
    _at_least("model.hidden_size", config.model.hidden_size, 1)

    _one_of("partition.kind", partition.kind, PARTITION_KINDS)
    if partition.kind == "natural" and not dataset.natural_id_column:
        raise ConfigError(
            "partition.kind", "natural", "iid, dirichlet, pathological (no natural clients)"
        )
    _at_least("partition.num_clients", partition.num_clients, 1)
    _positive("partition.alpha", partition.alpha)
    _in_range(
        "partition.classes_per_client",
        partition.classes_per_client,
        1,
        dataset.num_classes,
        closed_high=True,
    )

    _one_of("client.optimizer", client.optimizer, OPTIMIZER_NAMES)
    _positive("client.lr", client.lr)
    _in_range("client.momentum", client.momentum, 0.0, 1.0, closed_high=False)
    _at_least("client.weight_decay", client.weight_decay, 0.0)
    _at_least("client.local_epochs", client.local_epochs, 1)
    _at_least("client.batch_size", client.batch_size, 1)
    _at_least("client.max_steps", client.max_steps, 0)
    _one_of("client.device", client.device, DEVICE_CHOICES)

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
    if strategy.evaluate_clients_per_round > 0 and dataset.validation_fraction == 0:
        raise ConfigError(
            "dataset.validation_fraction",
            0.0,
            "a number in (0, 1) while strategy.evaluate_clients_per_round > 0",
        )
    _positive("strategy.global_lr_min", strategy.global_lr_min)
    _ordered(
        "strategy.global_lr_min",
        strategy.global_lr_min,
        "strategy.global_lr_max",
        strategy.global_lr_max,
    )
    _in_range(
        "strategy.global_lr",
        strategy.global_lr,
        strategy.global_lr_min,
        strategy.global_lr_max,
        closed_high=True,
    )
    _at_least("strategy.hyper_lr", strategy.hyper_lr, 0.0)
    _ordered("strategy.acc_min", strategy.acc_min, "strategy.acc_max", strategy.acc_max)
    _ordered(
        "strategy.local_acc_min",
        strategy.local_acc_min,
        "strategy.local_acc_max",
        strategy.local_acc_max,
    )
    _in_range(
        "strategy.local_lr_min_factor", strategy.local_lr_min_factor, 1e-12, 1.0, closed_high=True
    )
    _at_least("strategy.local_lr_max_factor", strategy.local_lr_max_factor, 1.0)
    _positive("strategy.server_lr", strategy.server_lr)
    for key in ("server_momentum", "beta_1", "beta_2"):
        _in_range(f"strategy.{key}", getattr(strategy, key), 0.0, 1.0, closed_high=False)
    if strategy.name in ("fedhyper_gm", "fedhyper"):
        # GM starts its accumulator at (1 − μ)(α_0 − 1), which must lie within its bounds.
        scale = 1.0 - strategy.server_momentum
        _in_range(
            "strategy.global_lr",
            strategy.global_lr,
            1.0 + strategy.acc_min / scale,
            1.0 + strategy.acc_max / scale,
            closed_high=True,
        )
    _positive("strategy.tau", strategy.tau)
    _in_range("strategy.decay", strategy.decay, 1e-12, 1.0, closed_high=True)
    _at_least("strategy.fedexp_eps", strategy.fedexp_eps, 0.0)
    _one_of("strategy.client_rule", strategy.client_rule, CLIENT_RULES)
    if strategy.client_rule == "hypergradient":
        _one_of("strategy.name", strategy.name, RULE_STRATEGY_NAMES)
    _at_least("strategy.cl_coupling", strategy.cl_coupling, 0.0)

    _one_of("simulation.backend", config.simulation.backend, BACKENDS)
    _positive("simulation.num_cpus_per_client", config.simulation.num_cpus_per_client)
    _at_least("simulation.num_gpus_per_client", config.simulation.num_gpus_per_client, 0.0)
    _positive("simulation.round_timeout_s", config.simulation.round_timeout_s)
    _at_least("simulation.node_wait_s", config.simulation.node_wait_s, 0.0)

    reliability, faults = config.reliability, config.faults
    _at_least("reliability.checkpoint_every", reliability.checkpoint_every, 0)
    _in_range(
        "reliability.min_reply_fraction",
        reliability.min_reply_fraction,
        0.0,
        1.0,
        closed_high=True,
    )
    _at_least("reliability.round_retries", reliability.round_retries, 0)
    if reliability.max_update_norm_ratio != 0:
        _at_least("reliability.max_update_norm_ratio", reliability.max_update_norm_ratio, 1.0)
    budget = 1.0
    for key in ("crash_probability", "delay_probability", "poison_probability"):
        # Exclusive faults: each probability takes from what the earlier ones left (the
        # tolerance keeps 0.3 + 0.3 + 0.4 from failing on rounding).
        _in_range(f"faults.{key}", getattr(faults, key), 0.0, budget + 1e-12, closed_high=True)
        budget -= getattr(faults, key)
    _one_of("faults.poison", faults.poison, POISON_KINDS)
    if not math.isfinite(faults.poison_scale):
        raise ConfigError("faults.poison_scale", faults.poison_scale, "a finite number")
