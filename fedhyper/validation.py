"""Reject an invalid experiment before any data is loaded or any client trains."""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from typing import Any

from fedhyper.checks import at_least as _at_least
from fedhyper.checks import in_range as _in_range
from fedhyper.checks import one_of as _one_of
from fedhyper.checks import positive as _positive
from fedhyper.client_rules import CLIENT_RULES
from fedhyper.config import ExperimentConfig
from fedhyper.data.partition import PARTITION_KINDS
from fedhyper.data.spec import check_spec
from fedhyper.errors import ConfigError
from fedhyper.faults import POISON_KINDS
from fedhyper.methods import METHODS
from fedhyper.models import choose_model
from fedhyper.training import DEVICE_CHOICES, OPTIMIZER_NAMES

BACKENDS = ("ray",)


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
    _check_finite("", config)
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
    _positive("strategy.global_lr", strategy.global_lr)
    _check_method_and_client_rule(config)

    _one_of("simulation.backend", config.simulation.backend, BACKENDS)
    _positive("simulation.num_cpus_per_client", config.simulation.num_cpus_per_client)
    _at_least("simulation.num_gpus_per_client", config.simulation.num_gpus_per_client, 0.0)
    _positive("simulation.round_timeout_s", config.simulation.round_timeout_s)
    _positive("simulation.poll_interval_s", config.simulation.poll_interval_s)
    _at_least("simulation.node_wait_s", config.simulation.node_wait_s, 0.0)
    _at_least("simulation.num_supernodes", config.simulation.num_supernodes, 0)

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


def _check_finite(prefix: str, settings: Any) -> None:
    """Reject ``inf`` and ``nan`` in every float setting, the plug-ins' own included.

    Hydra reads ``inf`` and ``nan`` as floats, and most range checks let ``inf`` through
    (it is > 0); a run would then fail rounds later, far from the setting.
    """
    for item in fields(settings):
        key, value = f"{prefix}{item.name}", getattr(settings, item.name)
        if is_dataclass(value):
            _check_finite(f"{key}.", value)
        for number in value if isinstance(value, list) else [value]:
            if isinstance(number, float) and not math.isfinite(number):
                raise ConfigError(key, value, "a finite number")


def _check_method_and_client_rule(config: ExperimentConfig) -> None:
    """Check the method's and the client rule's own settings, and that they fit together."""
    method = METHODS.get(config.strategy.name)
    rule_settings = config.client.rule
    rule = CLIENT_RULES.get(rule_settings.name)
    # Hydra types each node by the chosen yaml; a renamed `name` would mismatch it.
    for key, name, settings, expected in (
        ("strategy.name", method.name, config.strategy, method.params),
        ("client.rule.name", rule.name, rule_settings, rule.params),
    ):
        if type(settings) is not expected:
            raise ConfigError(key, name, f"the name its yaml gives ({type(settings).__name__})")
    method.check(config, config.strategy)
    rule.check(rule_settings)
    if method.client_rule is not None and rule.name != method.client_rule:
        raise ConfigError(
            "client_rule", rule.name, f"{method.client_rule} (strategy {method.name} needs it)"
        )
    if rule.needs_previous_delta and not method.sends_previous_delta:
        senders = [m.name for m in METHODS if m.sends_previous_delta]
        raise ConfigError(
            "strategy.name",
            method.name,
            f"a method that sends the previous update, which client_rule={rule.name} "
            f"reads: {', '.join(senders)}",
        )
