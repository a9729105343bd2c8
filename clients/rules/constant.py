"""The ``constant`` client rule: every local step uses the learning rate the server sent."""

from __future__ import annotations

from collections.abc import Mapping

from fedhyper.client_rules import ClientRuleSpec, RuleInputs, register_client_rule
from fedhyper.config import ClientRuleConfig


class ConstantLR:
    """Leaves the optimiser alone; reports nothing and keeps nothing."""

    def start_epoch(self) -> None:
        """Nothing to do."""

    def before_step(self) -> None:
        """Nothing to do."""

    def after_step(self) -> None:
        """Nothing to do."""

    def report(self) -> dict[str, float]:
        """Nothing to report."""
        return {}

    def state_dict(self) -> dict[str, float]:
        """Nothing to keep."""
        return {}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Nothing to restore."""


def _build(settings: ClientRuleConfig, inputs: RuleInputs) -> ConstantLR:
    return ConstantLR()


# No settings beyond the name: the LR stays as the server sent it.
CONSTANT = register_client_rule(ClientRuleSpec("constant", ClientRuleConfig, _build))
