"""The registry of federated methods: one :class:`Method` per ``conf/strategy/<name>.yaml``.

A method is a name, the dataclass of its settings (the schema of its yaml), a builder
of its Flower strategy, the check of its settings and what it needs from the rest of
the system. Methods register from the modules of ``strategies/methods/`` (imported on
the first lookup) or from a module named in ``$FEDHYPER_PLUGINS``; validation, the
strategy factory, the benchmark tables and the README's methods table read this
registry. No Flower import here: builders are registered by the Flower side.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fedhyper.config import ExperimentConfig, StrategyConfig
from fedhyper.registry import Registry
from fedhyper.rules.base import ServerRule

P = TypeVar("P", bound=StrategyConfig)


def no_checks(config: ExperimentConfig, params: Any) -> None:
    """Accept every value: for methods whose settings have no constraint of their own."""


@dataclass(frozen=True)
class Method(Generic[P]):
    """One federated method.

    Attributes
    ----------
    name : str
        ``strategy.name``, also the stem of its ``conf/strategy/<name>.yaml``.
    label : str
        Display name (``FedHyper-G``).
    params : type
        Its settings: a :class:`~fedhyper.config.StrategyConfig` subclass.
    build : callable
        ``build(config, params, trainable_keys)`` returns its Flower ``Strategy``.
    check : callable
        ``check(config, params)`` raises :class:`~fedhyper.errors.ConfigError` on the
        first invalid setting of its own.
    server_rule : callable or None
        ``server_rule(config, params)`` returns the pure rule a
        ``strategies.rule_strategy.RuleStrategy`` applies to the averaged update; such a
        method can send the previous update Δ_{t−1} to the clients.
    client_rule : str or None
        The client rule the method needs (``conf/strategy/<name>.yaml`` selects it);
        ``None`` runs with any client rule its server side supports.
    schedules_client_lr : bool
        The server sets the clients' learning rate each round.
    baseline : bool
        A method FedHyper is compared with, rather than a FedHyper variant.

    """

    name: str
    label: str
    params: type[P]
    build: Callable[[ExperimentConfig, P, Sequence[str]], object]
    check: Callable[[ExperimentConfig, P], None] = no_checks
    server_rule: Callable[[ExperimentConfig, P], ServerRule] | None = None
    client_rule: str | None = None
    schedules_client_lr: bool = False
    baseline: bool = False

    @property
    def sends_previous_delta(self) -> bool:
        """Whether the method can send Δ_{t−1} to the clients (it steps by a server rule)."""
        return self.server_rule is not None

    def defaults(self) -> P:
        """Return its settings at their defaults, named after the method."""
        return self.params(name=self.name)


METHODS: Registry[Method[Any]] = Registry("strategy.name", "strategies.methods")
"""Every method, by name, in registration order."""


def register_method(method: Method[P]) -> Method[P]:
    """Add a method to :data:`METHODS` and return it (call once, at module level)."""
    return METHODS.register(method.name, method)


def method_names() -> tuple[str, ...]:
    """Return the names of the registered methods, in registration order."""
    return METHODS.names()


def method_of(config: ExperimentConfig) -> Method[Any]:
    """Return the method an experiment runs (``strategy.name``)."""
    return METHODS.get(config.strategy.name)


def baselines() -> tuple[str, ...]:
    """Return the names of the methods registered as baselines."""
    return tuple(method.name for method in METHODS if method.baseline)
