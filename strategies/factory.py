"""Build the Flower strategy an experiment names."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flwr.serverapp.strategy import FedAvg, Strategy

from fedhyper.config import ExperimentConfig
from fedhyper.rules import GlobalLR
from strategies.rule_strategy import RuleStrategy

NUM_EXAMPLES_KEY = "num-examples"
"""Reply metric Flower weights the average by (the clients' training-set sizes)."""

UNIFORM_WEIGHT_KEY = "uniform-weight"
"""Reply metric equal to 1 on every client: weighting by it gives the plain mean."""


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
        "min_available_nodes": num_clients,
        "weighted_by_key": NUM_EXAMPLES_KEY if config.strategy.weighted else UNIFORM_WEIGHT_KEY,
    }


def _fedavg(config: ExperimentConfig, trainable_keys: Sequence[str]) -> Strategy:
    return FedAvg(**sampling_kwargs(config))


def _fedhyper_g(config: ExperimentConfig, trainable_keys: Sequence[str]) -> Strategy:
    strategy = config.strategy
    rule = GlobalLR(
        initial_lr=strategy.global_lr,
        hyper_lr=strategy.hyper_lr,
        bounds=(strategy.global_lr_min, strategy.global_lr_max),
    )
    return RuleStrategy(rule, trainable_keys, **sampling_kwargs(config))


BUILDERS: dict[str, Callable[[ExperimentConfig, Sequence[str]], Strategy]] = {
    "fedavg": _fedavg,
    "fedhyper_g": _fedhyper_g,
}
"""One builder per name of :data:`fedhyper.validation.STRATEGY_NAMES`."""


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
    return BUILDERS[config.strategy.name](config, trainable_keys)
