"""The ``descent_cosine`` client rule: clients measure FedHyper-Auto's local signal.

The rule itself is :class:`fedhyper.rules.descent_cosine.DescentCosine`; it leaves the
learning rate alone and reports the round's mean descent cosine, from which the server
(:class:`fedhyper.rules.auto.AutoLR`) sets the next round's client LR. When the server
sends the step it applied last round, the rule also reports the global LR's cosine.
"""

from __future__ import annotations

from fedhyper.client_rules import ClientRuleSpec, RuleInputs, register_client_rule
from fedhyper.config import ClientRuleConfig
from fedhyper.rules.descent_cosine import DescentCosine

NAME = "descent_cosine"


def _build(settings: ClientRuleConfig, inputs: RuleInputs) -> DescentCosine:
    return DescentCosine(inputs.parameters, inputs.previous_delta)


# No settings beyond the name: the rule only measures.
DESCENT_COSINE = register_client_rule(ClientRuleSpec(NAME, ClientRuleConfig, _build))
