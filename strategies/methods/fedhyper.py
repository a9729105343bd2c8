"""FedHyper's methods: G, GM, SL and CL, and the full method (GM + CL)."""

from __future__ import annotations

from dataclasses import dataclass

from clients.rules.hypergradient import NAME as HYPERGRADIENT
from fedhyper.checks import at_least, in_range, ordered, within_own_bounds
from fedhyper.config import ExperimentConfig, StrategyConfig
from fedhyper.methods import Method, register_method
from fedhyper.rules.global_lr import GlobalLR
from fedhyper.rules.momentum import GlobalMomentumLR, accumulator_for_global_lr
from fedhyper.rules.plain import Plain
from fedhyper.rules.server_local_lr import ServerLocalLR
from strategies.factory import rule_strategy


@dataclass
class HyperParams(StrategyConfig):
    """The hypergradient's settings, shared by every rule that follows one.

    Attributes
    ----------
    hyper_lr : float
        Hyper learning rate β of the rule.
    normalised : bool
        Use β · cos(Δ_t, Δ_{t-1}) instead of the raw inner product (off in the reference).

    """

    hyper_lr: float = 1.0
    normalised: bool = False


@dataclass
class GlobalLRParams(HyperParams):
    """FedHyper-G: α starts at ``global_lr`` and stays within its bounds."""

    global_lr_min: float = 0.2
    global_lr_max: float = 5.0


@dataclass
class AccumulatorParams(HyperParams):
    """Clip bounds of the accumulator of FedHyper-GM and the universal wrapper ([-0.2, 4])."""

    acc_min: float = -0.2
    acc_max: float = 4.0


@dataclass
class MomentumParams(AccumulatorParams):
    """FedHyper-GM and the full method: the accumulator's bounds and the momentum μ (0.9)."""

    server_momentum: float = 0.9


@dataclass
class ServerLocalParams(HyperParams):
    """FedHyper-SL.

    Attributes
    ----------
    local_acc_min, local_acc_max : float
        Clip bounds of its accumulator; [-0.9, 9] lets η_0 (1 + acc) reach the whole LR
        range without winding up.
    local_lr_min_factor, local_lr_max_factor : float
        Bounds of the client LR as multiples of η_0 (reference: 0.1, 10).

    """

    local_acc_min: float = -0.9
    local_acc_max: float = 9.0
    local_lr_min_factor: float = 0.1
    local_lr_max_factor: float = 10.0


def check_hyper(config: ExperimentConfig, params: HyperParams) -> None:
    """Check the hyper learning rate."""
    at_least("strategy.hyper_lr", params.hyper_lr, 0.0)


def check_accumulator(config: ExperimentConfig, params: AccumulatorParams) -> None:
    """Check the hyper learning rate and the accumulator's bounds."""
    check_hyper(config, params)
    ordered("strategy.acc_min", params.acc_min, "strategy.acc_max", params.acc_max)


def _check_global(config: ExperimentConfig, params: GlobalLRParams) -> None:
    check_hyper(config, params)
    within_own_bounds(
        "strategy.global_lr", params.global_lr, params.global_lr_min, params.global_lr_max
    )


def _check_momentum(config: ExperimentConfig, params: MomentumParams) -> None:
    check_accumulator(config, params)
    in_range("strategy.server_momentum", params.server_momentum, 0.0, 1.0, closed_high=False)
    # GM starts its accumulator at (1 − μ)(α_0 − 1), which must lie within its bounds.
    scale = 1.0 - params.server_momentum
    in_range(
        "strategy.global_lr",
        params.global_lr,
        1.0 + params.acc_min / scale,
        1.0 + params.acc_max / scale,
        closed_high=True,
    )


def _check_server_local(config: ExperimentConfig, params: ServerLocalParams) -> None:
    check_hyper(config, params)
    ordered(
        "strategy.local_acc_min",
        params.local_acc_min,
        "strategy.local_acc_max",
        params.local_acc_max,
    )
    in_range(
        "strategy.local_lr_min_factor", params.local_lr_min_factor, 1e-12, 1.0, closed_high=True
    )
    at_least("strategy.local_lr_max_factor", params.local_lr_max_factor, 1.0)


def _global_lr(config: ExperimentConfig, params: GlobalLRParams) -> GlobalLR:
    bounds = (params.global_lr_min, params.global_lr_max)
    return GlobalLR(params.global_lr, params.hyper_lr, bounds, params.normalised)


def _momentum(config: ExperimentConfig, params: MomentumParams) -> GlobalMomentumLR:
    return GlobalMomentumLR(
        params.hyper_lr,
        (params.acc_min, params.acc_max),
        params.server_momentum,
        params.normalised,
        accumulator_for_global_lr(params.global_lr, params.server_momentum),
    )


def _server_local(config: ExperimentConfig, params: ServerLocalParams) -> ServerLocalLR:
    return ServerLocalLR(
        config.client.lr,
        params.hyper_lr,
        (params.local_acc_min, params.local_acc_max),
        (params.local_lr_min_factor, params.local_lr_max_factor),
        params.normalised,
    )


def _plain(config: ExperimentConfig, params: StrategyConfig) -> Plain:
    return Plain()


register_method(
    Method(
        "fedhyper_g",
        "FedHyper-G",
        GlobalLRParams,
        rule_strategy,
        _check_global,
        server_rule=_global_lr,
    )
)
register_method(
    Method(
        "fedhyper_gm",
        "FedHyper-GM",
        MomentumParams,
        rule_strategy,
        _check_momentum,
        server_rule=_momentum,
    )
)
register_method(
    Method(
        "fedhyper_sl",
        "FedHyper-SL",
        ServerLocalParams,
        rule_strategy,
        _check_server_local,
        server_rule=_server_local,
        schedules_client_lr=True,
    )
)
register_method(
    Method(
        "fedhyper_cl",
        "FedHyper-CL",
        StrategyConfig,
        rule_strategy,
        server_rule=_plain,
        client_rule=HYPERGRADIENT,
    )
)
register_method(
    Method(
        "fedhyper",
        "FedHyper (full)",
        MomentumParams,
        rule_strategy,
        _check_momentum,
        server_rule=_momentum,
        client_rule=HYPERGRADIENT,
    )
)
