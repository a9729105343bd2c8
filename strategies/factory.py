"""Build the Flower strategy an experiment names, from the method registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flwr.serverapp.strategy import Strategy

from fedhyper.client_rules import CLIENT_RULES
from fedhyper.config import ExperimentConfig, StrategyConfig
from fedhyper.methods import method_of
from fedhyper.rules import ServerRule
from fedhyper.wire import ARRAYS_RECORD, CONFIG_RECORD, NUM_EXAMPLES_KEY, UNIFORM_WEIGHT_KEY
from strategies.rule_strategy import RuleStrategy


def sampling_kwargs(config: ExperimentConfig) -> dict[str, Any]:
    """Translate clients-per-round into the arguments of Flower's FedAvg family.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment.

    Returns
    -------
    dict
        Keyword arguments accepted by :class:`flwr.serverapp.strategy.FedAvg`.

    """
    num_clients = config.partition.num_clients
    train, evaluate = config.strategy.clients_per_round, config.strategy.evaluate_clients_per_round
    return {
        "fraction_train": train / num_clients,
        "fraction_evaluate": evaluate / num_clients,
        # Flower floors fraction × nodes; the minimums make the count exact.
        "min_train_nodes": train,
        "min_evaluate_nodes": evaluate,
        # The runner waits for the federation and offers the strategy exactly the nodes
        # it sampled (strategies.federation.SampledGrid): a minimum above that would wait
        # forever.
        "min_available_nodes": 0,
        "weighted_by_key": weight_key(config),
        "arrayrecord_key": ARRAYS_RECORD,
        "configrecord_key": CONFIG_RECORD,
    }


def weight_key(config: ExperimentConfig) -> str:
    """Return the reply metric the aggregation weights by (``strategy.weighted``)."""
    return NUM_EXAMPLES_KEY if config.strategy.weighted else UNIFORM_WEIGHT_KEY


def server_rule(config: ExperimentConfig) -> ServerRule:
    """Build the pure server rule of a method that steps by one.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment; its method must register a ``server_rule``.

    Returns
    -------
    ServerRule
        A fresh rule with its initial state.

    Raises
    ------
    ValueError
        If the method does not step by a server rule.

    """
    method = method_of(config)
    if method.server_rule is None:
        raise ValueError(f"{method.name} does not step by a server rule")
    return method.server_rule(config, config.strategy)


def rule_strategy(
    config: ExperimentConfig, params: StrategyConfig, trainable_keys: Sequence[str]
) -> RuleStrategy:
    """Build FedAvg's sampling and averaging followed by the method's server rule.

    The builder of every method that registers a ``server_rule``; ``Δ_{t−1}`` travels
    to the clients when their rule needs it.
    """
    return RuleStrategy(
        server_rule(config),
        trainable_keys,
        send_previous_delta=CLIENT_RULES.get(config.client.rule.name).needs_previous_delta,
        **sampling_kwargs(config),
    )


def build_strategy(config: ExperimentConfig, trainable_keys: Sequence[str]) -> Strategy:
    """Instantiate the experiment's strategy.

    Parameters
    ----------
    config : ExperimentConfig
        A validated experiment.
    trainable_keys : sequence of str
        State-dict keys of the model's trainable floating-point parameters.

    Returns
    -------
    Strategy
        A Flower ``Strategy``.

    """
    strategy = method_of(config).build(config, config.strategy, trainable_keys)
    if not isinstance(strategy, Strategy):
        raise TypeError(f"{config.strategy.name}'s builder returned {strategy!r}")
    return strategy
