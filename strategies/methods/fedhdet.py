"""FedHDET: HDET's spread of client learning rates and its zero-order auto-LR, federated."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from flwr.serverapp.strategy import FedAvg

from fedhyper.checks import at_least, in_range, one_of, positive
from fedhyper.client_rules import CLIENT_RULES
from fedhyper.config import ExperimentConfig, StrategyConfig
from fedhyper.data.federated import pooled_validation
from fedhyper.errors import ConfigError
from fedhyper.methods import METHODS, Method, register_method
from fedhyper.models import build_model
from fedhyper.rules import Plain, ServerRule
from fedhyper.rules.hdet import HDETSettings, SpreadHyperparameter
from fedhyper.rules.hdet_clients import LR, SIGNALS, WEIGHT_DECAY, ClientSpread
from fedhyper.rules.hdet_spread import SPREAD_KINDS
from fedhyper.training import pick_device
from strategies.factory import rule_strategy, sampling_kwargs
from strategies.hdet_strategy import HDETStrategy, ValidationLoss

GLOBAL_RULES: dict[str, tuple[str, dict[str, Any]] | None] = {
    "none": None,
    "fedhyper_g": ("fedhyper_g", {}),
    "fedhyper_gm": ("fedhyper_gm", {}),
    # FedHyper-Auto's global LR only: the spread sets the clients' LR. Its signal is the
    # server's cosine: FedHDET's clients run no step hook to measure the clients' one.
    "auto": ("fedhyper_auto", {"local_hyper_lr": 0.0, "global_signal": "server"}),
}
"""``strategy.global_rule`` -> the method whose server rule sets the global LR (at its
defaults, with ``strategy.global_lr`` and these settings), or ``None`` for FedAvg's step."""


@dataclass
class FedHDETParams(StrategyConfig):
    """FedHDET's settings (defaults: the paper's constants).

    Attributes
    ----------
    signal : str
        What ranks the clients, lower is better: ``train_loss``, ``loss_drop`` or
        ``server_validation`` (:mod:`fedhyper.rules.hdet_clients`).
    spread : float
        Width ``a`` of the spread: client multipliers in ``[1 − a, 1 + a]`` (linear,
        ``a < 1``) or ``[1/(1 + a), 1 + a]`` (log); 0 is FedAvg at the base LR.
    spread_kind : str
        ``linear`` (the paper) or ``log``.
    warmup : int
        Rounds before the first meta-update.
    meta_momentum : float
        β of the meta-update's momentum.
    meta_lr : float
        λ; 0 keeps the base LR fixed (the spread without auto-LR).
    temperature : float
        σ of the softmax, in units of the signal.
    min_factor, max_factor : float
        Bounds of every base value, as multiples of its initial value.
    decay_rounds : int
        K: rounds after the warm-up over which the decay alone takes the base LR to
        ``floor_factor`` times its initial value; 0: no decay.
    floor_factor : float
        The decay's floor, as a multiple of the initial LR (used when ``decay_rounds > 0``).
    spread_weight_decay : bool
        Also spread ``client.weight_decay`` (which must be > 0), with its own permutation.
    probe_examples : int
        Training rows each client measures its loss on before and after training
        (``loss_drop``).
    validation_examples : int
        Size of the server's validation sample, drawn from the rows the clients hold out
        (``server_validation``).
    global_rule : str
        The global LR: ``none`` (FedAvg's step), ``fedhyper_g``, ``fedhyper_gm`` or
        ``auto`` (FedHyper-Auto's), starting at ``global_lr``.

    """

    signal: str = "train_loss"
    spread: float = 1.0 / 9.0
    spread_kind: str = "linear"
    warmup: int = 0
    meta_momentum: float = 0.9
    meta_lr: float = 0.5
    temperature: float = 0.1
    min_factor: float = 0.01
    max_factor: float = 100.0
    decay_rounds: int = 0
    floor_factor: float = 0.1
    spread_weight_decay: bool = False
    probe_examples: int = 256
    validation_examples: int = 512
    global_rule: str = "none"


def _check(config: ExperimentConfig, params: FedHDETParams) -> None:
    one_of("strategy.signal", params.signal, SIGNALS)
    one_of("strategy.spread_kind", params.spread_kind, SPREAD_KINDS)
    if params.spread_kind == "linear":
        # A linear spread of width 1 or more would give a client an LR of 0 or less.
        in_range("strategy.spread", params.spread, 0.0, 1.0, closed_high=False)
    else:
        at_least("strategy.spread", params.spread, 0.0)
    if not math.isfinite(params.spread):
        raise ConfigError("strategy.spread", params.spread, "a finite number")
    at_least("strategy.warmup", params.warmup, 0)
    in_range("strategy.meta_momentum", params.meta_momentum, 0.0, 1.0, closed_high=False)
    at_least("strategy.meta_lr", params.meta_lr, 0.0)
    positive("strategy.temperature", params.temperature)
    in_range("strategy.min_factor", params.min_factor, 0.0, 1.0, closed_high=True)
    at_least("strategy.max_factor", params.max_factor, 1.0)
    at_least("strategy.decay_rounds", params.decay_rounds, 0)
    if params.decay_rounds:
        in_range("strategy.floor_factor", params.floor_factor, 1e-12, 1.0, closed_high=True)
    if params.spread_weight_decay and not config.client.weight_decay > 0:
        raise ConfigError(
            "client.weight_decay",
            config.client.weight_decay,
            "a number > 0 while strategy.spread_weight_decay=true",
        )
    if params.signal == "loss_drop":
        at_least("strategy.probe_examples", params.probe_examples, 1)
    if params.signal == "server_validation":
        at_least("strategy.validation_examples", params.validation_examples, 1)
        if config.dataset.validation_fraction == 0:
            raise ConfigError(
                "dataset.validation_fraction",
                0.0,
                "a number in (0, 1) while strategy.signal=server_validation",
            )
    one_of("strategy.global_rule", params.global_rule, tuple(GLOBAL_RULES))
    global_rule = _global_method(params)
    if global_rule is not None:
        method, global_params = global_rule
        method.check(config, global_params)


def _global_method(params: FedHDETParams) -> tuple[Method[Any], StrategyConfig] | None:
    """Return the method whose server rule sets the global LR, with its settings."""
    entry = GLOBAL_RULES[params.global_rule]
    if entry is None:
        return None
    name, settings = entry
    method = METHODS.get(name)
    return method, replace(method.defaults(), global_lr=params.global_lr, **settings)


def _global_rule(config: ExperimentConfig, params: FedHDETParams) -> ServerRule:
    global_rule = _global_method(params)
    if global_rule is None:
        return Plain()
    method, global_params = global_rule
    assert method.server_rule is not None  # every GLOBAL_RULES method steps by a rule
    return method.server_rule(config, global_params)


def _spread(config: ExperimentConfig, params: FedHDETParams) -> ClientSpread:
    settings = HDETSettings(
        width=params.spread,
        kind="log" if params.spread_kind == "log" else "linear",
        warmup=params.warmup,
        momentum=params.meta_momentum,
        meta_lr=params.meta_lr,
        temperature=params.temperature,
        seed=config.seed,
    )

    def controller(name: str, initial: float, decays: bool) -> SpreadHyperparameter:
        return SpreadHyperparameter(
            name,
            initial,
            settings,
            floor=params.floor_factor * initial if decays else None,
            decay_steps=params.decay_rounds if decays else None,
            bounds=(params.min_factor * initial, params.max_factor * initial),
        )

    controllers = [controller(LR, config.client.lr, params.decay_rounds > 0)]
    if params.spread_weight_decay:
        controllers.append(controller(WEIGHT_DECAY, config.client.weight_decay, False))
    return ClientSpread(controllers)


def _validation(config: ExperimentConfig, params: FedHDETParams) -> ValidationLoss | None:
    if params.signal != "server_validation":
        return None
    data = pooled_validation(
        config.dataset, config.partition, config.seed, params.validation_examples
    )
    device = pick_device("auto")
    # Its own generator state: building it must not shift the run's random streams.
    with torch.random.fork_rng(devices=[]):
        model = build_model(
            config.dataset.spec(), config.model.name, hidden_size=config.model.hidden_size
        )
    return ValidationLoss(model.to(device), data, device)


def _build(config: ExperimentConfig, params: FedHDETParams, keys: Any) -> HDETStrategy:
    needs_delta = CLIENT_RULES.get(config.client.rule.name).needs_previous_delta
    inner = (
        FedAvg(**sampling_kwargs(config))
        if params.global_rule == "none" and not needs_delta
        else rule_strategy(config, params, keys)
    )
    return HDETStrategy(
        inner,
        _spread(config, params),
        params.signal,
        probe_examples=params.probe_examples,
        validation=_validation(config, params),
    )


register_method(
    Method(
        "fedhdet",
        "FedHDET",
        FedHDETParams,
        _build,
        _check,
        server_rule=_global_rule,
        schedules_client_lr=True,
    )
)
