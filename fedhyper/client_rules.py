"""The registry of client rules: how the local learning rate moves during local training.

A client rule is a name, the dataclass of its settings (the schema of its
``conf/client_rule/<name>.yaml``, under ``client.rule``), a builder of the per-round
:class:`ClientRule` and the check of its settings. Rules register from the modules of
``clients/rules/`` (imported on the first lookup) or from a module named in
``$FEDHYPER_PLUGINS``. Their settings reach the clients as a flat mapping of scalars
(:func:`fedhyper.wire.rule_settings`), so a SuperNode needs no copy of the configuration files.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import torch
from torch import Tensor

from fedhyper.config import ClientRuleConfig
from fedhyper.registry import Registry
from fedhyper.training import StepController
from fedhyper.wire import Scalar

S = TypeVar("S", bound=ClientRuleConfig)


class ClientRule(StepController, Protocol):
    """A client rule for one round: the training loop's step hooks, its report, its state."""

    def report(self) -> dict[str, float]:
        """Return the round's figures, sent to the server as ``<rule name>-<key>`` metrics."""
        ...

    def state_dict(self) -> dict[str, float]:
        """Return what the client keeps for its next round (empty when nothing)."""
        ...

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Restore what :meth:`state_dict` returned in the client's previous round."""
        ...


@dataclass(frozen=True)
class RuleInputs:
    """What a client knows when it builds its rule for a round.

    Attributes
    ----------
    parameters : list of Tensor
        The model's trainable floating-point parameters, in state-dict order.
    optimizer : torch.optim.Optimizer
        The optimiser stepping them, set to ``base_lr``.
    base_lr : float
        The learning rate the server sent, η_0.
    previous_delta : list of Tensor or None
        The server's last unscaled aggregated update Δ_{t−1}, matching ``parameters``,
        when the rule needs it and the server has one.
    clients_per_round : int
        Clients the server samples for training each round.
    saved_state : mapping
        What the rule's :meth:`ClientRule.state_dict` returned on this client in its
        previous round (empty in its first).

    """

    parameters: list[Tensor]
    optimizer: torch.optim.Optimizer
    base_lr: float
    previous_delta: list[Tensor] | None
    clients_per_round: int
    saved_state: Mapping[str, float] = field(default_factory=dict)


def no_checks(settings: Any) -> None:
    """Accept every value: for rules whose settings have no constraint."""


@dataclass(frozen=True)
class ClientRuleSpec(Generic[S]):
    """One client rule.

    Attributes
    ----------
    name : str
        ``client.rule.name``, also the stem of its ``conf/client_rule/<name>.yaml``.
    params : type
        Its settings: a :class:`~fedhyper.config.ClientRuleConfig` subclass.
    build : callable
        ``build(settings, inputs)`` returns the :class:`ClientRule` of one round.
    needs_previous_delta : bool
        The rule reads Δ_{t−1}: only methods that send it can run it.
    check : callable
        ``check(settings)`` raises :class:`~fedhyper.errors.ConfigError` on the first
        invalid setting.

    """

    name: str
    params: type[S]
    build: Callable[[S, RuleInputs], ClientRule]
    needs_previous_delta: bool = False
    check: Callable[[S], None] = no_checks

    def defaults(self) -> S:
        """Return its settings at their defaults, named after the rule."""
        return self.params(name=self.name)


CLIENT_RULES: Registry[ClientRuleSpec[Any]] = Registry("client_rule", "clients.rules")
"""Every client rule, by name, in registration order."""


def register_client_rule(spec: ClientRuleSpec[S]) -> ClientRuleSpec[S]:
    """Add a client rule to :data:`CLIENT_RULES` and return it (once, at module level)."""
    return CLIENT_RULES.register(spec.name, spec)


def read_settings(name: str, settings: Mapping[str, Scalar]) -> ClientRuleConfig:
    """Rebuild a rule's settings from :func:`fedhyper.wire.rule_settings` on the client."""
    settings_type: type[ClientRuleConfig] = CLIENT_RULES.get(name).params
    return settings_type(name=name, **settings)
