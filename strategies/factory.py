"""Build the Flower strategy an experiment names."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi, Strategy

from fedhyper.config import ExperimentConfig
from fedhyper.rules import (
    DecayGlobal,
    DecayLocal,
    FedExP,
    GlobalLR,
    GlobalMomentumLR,
    Plain,
    ServerLocalLR,
    ServerRule,
    UniversalGlobalLR,
    accumulator_for_global_lr,
)
from fedhyper.validation import RULE_STRATEGY_NAMES
from fedhyper.wire import ARRAYS_RECORD, CONFIG_RECORD, NUM_EXAMPLES_KEY, UNIFORM_WEIGHT_KEY
from strategies.delegating import AveragedBuffers, DelegatingStrategy
from strategies.rule_strategy import RuleStrategy
from strategies.universal import UniversalStrategy

StrategyBuilder = Callable[[ExperimentConfig, Sequence[str]], Strategy]
InnerBuilder = Callable[[ExperimentConfig, Sequence[str]], FedAvg | DelegatingStrategy]
"""Builds a strategy that another can wrap."""


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


def _fedavg(config: ExperimentConfig, keys: Sequence[str]) -> FedAvg:
    return FedAvg(**sampling_kwargs(config))


def _fedavgm(config: ExperimentConfig, keys: Sequence[str]) -> AveragedBuffers:
    strategy = config.strategy
    fedavgm = FedAvgM(
        server_learning_rate=strategy.server_lr,
        server_momentum=strategy.server_momentum,
        **sampling_kwargs(config),
    )
    return AveragedBuffers(fedavgm, keys)


def _fedopt(kind: type[FedAdam | FedYogi | FedAdagrad]) -> InnerBuilder:
    def build(config: ExperimentConfig, keys: Sequence[str]) -> AveragedBuffers:
        strategy = config.strategy
        kwargs: dict[str, Any] = {"eta": strategy.server_lr, "eta_l": config.client.lr}
        kwargs["tau"] = strategy.tau
        if kind is not FedAdagrad:
            kwargs |= {"beta_1": strategy.beta_1, "beta_2": strategy.beta_2}
        return AveragedBuffers(kind(**kwargs, **sampling_kwargs(config)), keys)

    return build


def server_rule(config: ExperimentConfig, name: str) -> ServerRule:
    """Build the pure server rule of a rule-based strategy.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment, whose ``strategy`` section holds the rule's settings.
    name : str
        One of ``RULE_STRATEGY_NAMES``.

    Returns
    -------
    ServerRule
        A fresh rule with its initial state.

    """
    s = config.strategy
    acc_bounds = (s.acc_min, s.acc_max)
    rules: dict[str, Callable[[], ServerRule]] = {
        "fedhyper_g": lambda: GlobalLR(
            s.global_lr, s.hyper_lr, (s.global_lr_min, s.global_lr_max), s.normalised
        ),
        "fedhyper_gm": lambda: GlobalMomentumLR(
            s.hyper_lr,
            acc_bounds,
            s.server_momentum,
            s.normalised,
            accumulator_for_global_lr(s.global_lr, s.server_momentum),
        ),
        "fedhyper_sl": lambda: ServerLocalLR(
            config.client.lr,
            s.hyper_lr,
            (s.local_acc_min, s.local_acc_max),
            (s.local_lr_min_factor, s.local_lr_max_factor),
            s.normalised,
        ),
        "fedhyper_cl": Plain,
        "decay_g": lambda: DecayGlobal(s.global_lr, s.decay),
        "decay_sl": lambda: DecayLocal(config.client.lr, s.decay),
        "fedexp": lambda: FedExP(s.fedexp_eps),
    }
    rules["fedhyper"] = rules["fedhyper_gm"]
    return rules[name]()


def _rule_strategy(rule_name: str | None = None) -> InnerBuilder:
    def build(config: ExperimentConfig, keys: Sequence[str]) -> FedAvg:
        return RuleStrategy(
            server_rule(config, rule_name or config.strategy.name),
            keys,
            send_previous_delta=config.strategy.client_rule == "hypergradient",
            **sampling_kwargs(config),
        )

    return build


def _universal(inner: InnerBuilder) -> StrategyBuilder:
    def build(config: ExperimentConfig, keys: Sequence[str]) -> Strategy:
        s = config.strategy
        rule = UniversalGlobalLR(s.hyper_lr, (s.acc_min, s.acc_max), s.normalised)
        return UniversalStrategy(inner(config, keys), rule, keys)

    return build


BUILDERS: dict[str, StrategyBuilder] = {
    "fedavg": _fedavg,
    "fedavgm": _fedavgm,
    "fedadam": _fedopt(FedAdam),
    "fedyogi": _fedopt(FedYogi),
    "fedadagrad": _fedopt(FedAdagrad),
    **dict.fromkeys(RULE_STRATEGY_NAMES, _rule_strategy()),
    "universal_fedadam": _universal(_fedopt(FedAdam)),
    "universal_fedavgm": _universal(_fedavgm),
    "universal_fedexp": _universal(_rule_strategy("fedexp")),
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
