"""The ``hypergradient`` client rule: FedHyper-CL on every client.

The rule itself is :class:`fedhyper.rules.client_lr.HypergradientLocalLR`; this module
declares its settings and builds it for a round.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedhyper.checks import at_least, in_range
from fedhyper.client_rules import ClientRuleSpec, RuleInputs, register_client_rule
from fedhyper.config import ClientRuleConfig
from fedhyper.rules.client_lr import HypergradientLocalLR

NAME = "hypergradient"


@dataclass
class HypergradientSettings(ClientRuleConfig):
    """FedHyper-CL's settings.

    Attributes
    ----------
    coupling : float
        c times the clients per round (reference: 0.1, so c = 0.1 / M).
    skip_first_batch : bool
        Leave the LR alone after the first step of each local epoch (reference: yes).
    carry : bool
        Carry each client's LR multiplier into its next round (reference: reset).
    lr_min_factor, lr_max_factor : float
        Bounds of the client LR as multiples of η_0 (reference: 0.1, 10).

    """

    name: str = NAME
    coupling: float = 0.1
    skip_first_batch: bool = True
    carry: bool = False
    lr_min_factor: float = 0.1
    lr_max_factor: float = 10.0

    def keeps_node_state(self) -> bool:
        """Keep the multiplier on the clients when it is carried."""
        return self.carry


def _check(settings: HypergradientSettings) -> None:
    at_least("client.rule.coupling", settings.coupling, 0.0)
    in_range("client.rule.lr_min_factor", settings.lr_min_factor, 1e-12, 1.0, closed_high=True)
    at_least("client.rule.lr_max_factor", settings.lr_max_factor, 1.0)


def _build(settings: HypergradientSettings, inputs: RuleInputs) -> HypergradientLocalLR:
    rule = HypergradientLocalLR(
        inputs.parameters,
        inputs.optimizer,
        base_lr=inputs.base_lr,
        global_delta=inputs.previous_delta,
        # The reference's c = 0.1 / (clients sampled this round).
        coupling=settings.coupling / inputs.clients_per_round,
        skip_first_batch=settings.skip_first_batch,
        bounds=(settings.lr_min_factor, settings.lr_max_factor),
    )
    if settings.carry and inputs.saved_state:
        rule.load_state_dict(inputs.saved_state)
    return rule


HYPERGRADIENT = register_client_rule(
    ClientRuleSpec(NAME, HypergradientSettings, _build, needs_previous_delta=True, check=_check)
)
