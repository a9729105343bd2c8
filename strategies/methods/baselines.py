"""The methods FedHyper is compared with: Flower's FedAvg family, FedExP and the decays."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flwr.serverapp.strategy import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi

from fedhyper.checks import at_least, in_range, positive
from fedhyper.config import ExperimentConfig, StrategyConfig
from fedhyper.methods import Method, register_method
from fedhyper.rules.decay import DecayGlobal, DecayLocal
from fedhyper.rules.fedexp import FedExP
from strategies.delegating import AveragedBuffers
from strategies.factory import rule_strategy, sampling_kwargs


@dataclass
class FedAvgMParams(StrategyConfig):
    """FedAvgM: server step size η and momentum μ on the pseudo-gradient."""

    server_lr: float = 1.0
    server_momentum: float = 0.9


@dataclass
class FedAdagradParams(StrategyConfig):
    """FedAdagrad: server step size η and adaptivity τ."""

    server_lr: float = 1.0
    tau: float = 1e-3


@dataclass
class FedAdamParams(FedAdagradParams):
    """FedAdam and FedYogi: FedAdagrad's settings plus the moments β_1, β_2."""

    beta_1: float = 0.9
    beta_2: float = 0.99


@dataclass
class FedExPParams(StrategyConfig):
    """FedExP: ε of its step size (1e-3 for CIFAR-10, 0.1 for EMNIST in its code)."""

    fedexp_eps: float = 1e-3


@dataclass
class DecayParams(StrategyConfig):
    """Decay-G and Decay-SL: the per-round factor (0.995)."""

    decay: float = 0.995


def check_fedavgm(config: ExperimentConfig, params: FedAvgMParams) -> None:
    """Check FedAvgM's step size and momentum."""
    positive("strategy.server_lr", params.server_lr)
    in_range("strategy.server_momentum", params.server_momentum, 0.0, 1.0, closed_high=False)


def check_fedopt(config: ExperimentConfig, params: FedAdagradParams) -> None:
    """Check the FedOpt family's step size, adaptivity and (FedAdam, FedYogi) moments."""
    positive("strategy.server_lr", params.server_lr)
    positive("strategy.tau", params.tau)
    if isinstance(params, FedAdamParams):
        for key in ("beta_1", "beta_2"):
            in_range(f"strategy.{key}", getattr(params, key), 0.0, 1.0, closed_high=False)


def check_fedexp(config: ExperimentConfig, params: FedExPParams) -> None:
    """Check FedExP's ε."""
    at_least("strategy.fedexp_eps", params.fedexp_eps, 0.0)


def _check_decay(config: ExperimentConfig, params: DecayParams) -> None:
    in_range("strategy.decay", params.decay, 1e-12, 1.0, closed_high=True)


def _fedavg(config: ExperimentConfig, params: StrategyConfig, keys: Sequence[str]) -> FedAvg:
    return FedAvg(**sampling_kwargs(config))


def fedavgm(
    config: ExperimentConfig, params: FedAvgMParams, keys: Sequence[str]
) -> AveragedBuffers:
    """Build FedAvgM, its server step applied to the trainable arrays only."""
    inner = FedAvgM(
        server_learning_rate=params.server_lr,
        server_momentum=params.server_momentum,
        **sampling_kwargs(config),
    )
    return AveragedBuffers(inner, keys)


def fedopt(
    kind: type[FedAdam | FedYogi | FedAdagrad],
) -> Callable[[ExperimentConfig, FedAdagradParams, Sequence[str]], AveragedBuffers]:
    """Return the builder of one of Flower's FedOpt strategies."""

    def build(
        config: ExperimentConfig, params: FedAdagradParams, keys: Sequence[str]
    ) -> AveragedBuffers:
        kwargs: dict[str, Any] = {"eta": params.server_lr, "eta_l": config.client.lr}
        kwargs["tau"] = params.tau
        if isinstance(params, FedAdamParams):
            kwargs |= {"beta_1": params.beta_1, "beta_2": params.beta_2}
        return AveragedBuffers(kind(**kwargs, **sampling_kwargs(config)), keys)

    return build


def fedexp_rule(config: ExperimentConfig, params: FedExPParams) -> FedExP:
    """Build FedExP's server rule."""
    return FedExP(params.fedexp_eps)


register_method(Method("fedavg", "FedAvg", StrategyConfig, _fedavg, baseline=True))
register_method(Method("fedavgm", "FedAvgM", FedAvgMParams, fedavgm, check_fedavgm, baseline=True))
register_method(
    Method("fedadam", "FedAdam", FedAdamParams, fedopt(FedAdam), check_fedopt, baseline=True)
)
register_method(
    Method("fedyogi", "FedYogi", FedAdamParams, fedopt(FedYogi), check_fedopt, baseline=True)
)
register_method(
    Method(
        "fedadagrad",
        "FedAdagrad",
        FedAdagradParams,
        fedopt(FedAdagrad),
        check_fedopt,
        baseline=True,
    )
)
register_method(
    Method(
        "fedexp",
        "FedExP",
        FedExPParams,
        rule_strategy,
        check_fedexp,
        server_rule=fedexp_rule,
        baseline=True,
    )
)
register_method(
    Method(
        "decay_g",
        "Decay-G",
        DecayParams,
        rule_strategy,
        _check_decay,
        server_rule=lambda config, params: DecayGlobal(params.global_lr, params.decay),
        baseline=True,
    )
)
register_method(
    Method(
        "decay_sl",
        "Decay-SL",
        DecayParams,
        rule_strategy,
        _check_decay,
        server_rule=lambda config, params: DecayLocal(config.client.lr, params.decay),
        schedules_client_lr=True,
        baseline=True,
    )
)
