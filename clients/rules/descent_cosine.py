"""The ``descent_cosine`` client rule: clients measure FedHyper-Auto's local signal.

The rule itself is :class:`fedhyper.rules.descent_cosine.DescentCosine`; it leaves the
learning rate alone and reports the round's mean descent cosine, from which the server
(:class:`fedhyper.rules.auto.AutoLR`) sets the next round's client LR. When the server
sends the step it applied last round, the rule also reports the global LR's cosine.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedhyper.checks import one_of
from fedhyper.client_rules import ClientRuleSpec, RuleInputs, register_client_rule
from fedhyper.config import ClientRuleConfig
from fedhyper.rules.descent_cosine import HORIZONS, DescentCosine

NAME = "descent_cosine"


@dataclass
class DescentCosineSettings(ClientRuleConfig):
    """What the clients measure.

    Attributes
    ----------
    horizon : str
        ``step``: each gradient against the previous local step; ``round``: against
        the round's displacement so far (:mod:`fedhyper.rules.descent_cosine`).
    global_horizon : str
        The global LR's cosine with the server's last step, from the first mini-batch's
        gradient (``step``) or from the round's gradients summed (``round``).

    """

    name: str = NAME
    horizon: str = "round"
    global_horizon: str = "round"


def _check(settings: DescentCosineSettings) -> None:
    one_of("client.rule.horizon", settings.horizon, HORIZONS)
    one_of("client.rule.global_horizon", settings.global_horizon, HORIZONS)


def _build(settings: DescentCosineSettings, inputs: RuleInputs) -> DescentCosine:
    return DescentCosine(
        inputs.parameters,
        inputs.previous_delta,
        horizon=settings.horizon,
        global_horizon=settings.global_horizon,
    )


DESCENT_COSINE = register_client_rule(
    ClientRuleSpec(NAME, DescentCosineSettings, _build, check=_check)
)
