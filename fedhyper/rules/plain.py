"""FedAvg's server step as a rule, for composing and comparing with the others."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from fedhyper.rules.base import ServerRule, ServerStep
from fedhyper.rules.vector import clone_list

__all__ = ["Plain"]


class Plain(ServerRule):
    r"""FedAvg: :math:`w_{t+1} = w_t + \Delta_t`. Stateless."""

    def step(self, delta: Sequence[Tensor]) -> ServerStep:
        r"""Return a copy of :math:`\Delta_t`."""
        return ServerStep(
            update=clone_list(delta), global_lr=1.0, client_lr=None, hypergradient=0.0
        )

    def state_dict(self) -> dict[str, Any]:
        """Return ``{}``: FedAvg has no state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Accept the empty state of :meth:`state_dict`."""
        if state:
            raise KeyError(f"Plain has no state, got keys {sorted(state)}")
