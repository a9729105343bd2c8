"""FedHyper's "universal" claim: the global-LR rule on top of another server optimiser."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import FedAdam, FedAvg

from fedhyper.config import ExperimentConfig
from fedhyper.methods import Method, register_method
from fedhyper.rules.fedexp import FedExP
from fedhyper.rules.global_lr import UniversalGlobalLR
from strategies.delegating import DelegatingStrategy
from strategies.factory import sampling_kwargs
from strategies.methods.baselines import (
    FedAdamParams,
    FedAvgMParams,
    FedExPParams,
    check_fedavgm,
    check_fedexp,
    check_fedopt,
    fedavgm,
    fedopt,
)
from strategies.methods.fedhyper import AccumulatorParams, check_accumulator
from strategies.rule_strategy import RuleStrategy
from strategies.universal import UniversalStrategy

InnerBuilder = Callable[[ExperimentConfig, Any, Sequence[str]], FedAvg | DelegatingStrategy]
"""Builds the strategy the wrapper scales the update for."""


@dataclass
class UniversalFedAdamParams(FedAdamParams, AccumulatorParams):
    """The wrapper's accumulator around FedAdam's settings."""


@dataclass
class UniversalFedAvgMParams(FedAvgMParams, AccumulatorParams):
    """The wrapper's accumulator around FedAvgM's settings."""


@dataclass
class UniversalFedExPParams(FedExPParams, AccumulatorParams):
    """The wrapper's accumulator around FedExP's settings."""


def _universal(inner: InnerBuilder) -> Callable[..., UniversalStrategy]:
    def build(
        config: ExperimentConfig, params: AccumulatorParams, keys: Sequence[str]
    ) -> UniversalStrategy:
        rule = UniversalGlobalLR(
            params.hyper_lr, (params.acc_min, params.acc_max), params.normalised
        )
        return UniversalStrategy(inner(config, params, keys), rule, keys)

    return build


def _both(
    *checks: Callable[[ExperimentConfig, Any], None],
) -> Callable[[ExperimentConfig, Any], None]:
    def check(config: ExperimentConfig, params: Any) -> None:
        for each in checks:
            each(config, params)

    return check


def _fedexp(config: ExperimentConfig, params: FedExPParams, keys: Sequence[str]) -> RuleStrategy:
    return RuleStrategy(FedExP(params.fedexp_eps), keys, **sampling_kwargs(config))


register_method(
    Method(
        "universal_fedadam",
        "universal FedAdam",
        UniversalFedAdamParams,
        _universal(fedopt(FedAdam)),
        _both(check_accumulator, check_fedopt),
    )
)
register_method(
    Method(
        "universal_fedavgm",
        "universal FedAvgM",
        UniversalFedAvgMParams,
        _universal(fedavgm),
        _both(check_accumulator, check_fedavgm),
    )
)
register_method(
    Method(
        "universal_fedexp",
        "universal FedExP",
        UniversalFedExPParams,
        _universal(_fedexp),
        _both(check_accumulator, check_fedexp),
    )
)
