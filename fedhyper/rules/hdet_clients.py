r"""FedHDET's server side without Flower: the spread hyperparameters of a round's clients.

The sampled clients play HDET's replicas. Each spread hyperparameter (the learning rate,
optionally the weight decay) is a :class:`~fedhyper.rules.hdet.SpreadHyperparameter`
with its own name, hence its own permutation; client slot ``i`` of a round (its place
among the round's sampled clients) trains with :math:`\bar\eta\,\rho_{\pi(i)}` of each.
After the round, every controller is moved by the same signals, those of the clients
whose replies were aggregated.

The signal :math:`L_i` (lower is better) is one of :data:`SIGNALS`:

``train_loss``
    The client's mean training loss over the round (the paper's).
``loss_drop``
    :math:`L^{\text{after}}_i / L^{\text{before}}_i`, the loss on a fixed sample of the
    client's own training rows after local training relative to before it: one minus
    the relative drop. Dividing by the client's own starting loss removes the part of
    the loss that reflects how hard its data is rather than how well it trained.
``server_validation``
    The loss of the client's returned model on a validation sample common to every
    client, evaluated by the server before averaging.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fedhyper.rules.base import require_keys
from fedhyper.rules.hdet import MetaStep, SpreadHyperparameter

__all__ = [
    "LR",
    "SIGNALS",
    "WEIGHT_DECAY",
    "ClientSpread",
    "relative_loss",
]

LR = "lr"
"""Name of the spread learning rate (its permutation stream)."""

WEIGHT_DECAY = "weight_decay"
"""Name of the spread weight decay (its permutation stream)."""

SIGNALS = ("train_loss", "loss_drop", "server_validation")
"""What the clients are ranked by, lower is better; see the module docstring."""


def relative_loss(before: float, after: float) -> float:
    """Return ``after / before``, the ``loss_drop`` signal; NaN unless ``before`` is finite and > 0.

    A NaN signal gives its client softmax weight 0 (:func:`~fedhyper.rules.hdet.loss_weights`).
    """
    if not (math.isfinite(before) and before > 0.0):
        return math.nan
    return after / before


class ClientSpread:
    """The spread hyperparameters of a FedHDET run, each centred on its own base value.

    Parameters
    ----------
    controllers
        One controller per spread hyperparameter; the learning rate's (named
        :data:`LR`) is required, and names must differ.

    Raises
    ------
    ValueError
        If no controller is named :data:`LR`, or two share a name.

    """

    def __init__(self, controllers: Sequence[SpreadHyperparameter]) -> None:
        names = [controller.name for controller in controllers]
        if len(set(names)) != len(names):
            raise ValueError(f"spread hyperparameters must have distinct names, got {names}")
        if LR not in names:
            raise ValueError(f"the learning rate ({LR!r}) must be spread, got {names}")
        self.controllers = {controller.name: controller for controller in controllers}

    def base(self, name: str = LR) -> float:
        r"""Return :math:`\bar\eta` of hyperparameter ``name``."""
        return self.controllers[name].base

    def assign(self, round_index: int, num_clients: int) -> list[dict[str, float]]:
        """Return, for client slots ``0 .. num_clients-1``, each hyperparameter's value."""
        columns = {
            name: controller.values(round_index, num_clients)
            for name, controller in self.controllers.items()
        }
        return [
            {name: values[slot] for name, values in columns.items()} for slot in range(num_clients)
        ]

    def update(
        self, assigned: Sequence[Mapping[str, float]], signals: Sequence[float]
    ) -> dict[str, MetaStep]:
        """Count one round: move every base value by the answering clients' signals.

        Parameters
        ----------
        assigned
            The values (as :meth:`assign` gave them) of the clients whose replies were
            aggregated, in any order.
        signals
            Their signals, lower is better, in the same order.

        Returns
        -------
        dict of str to MetaStep
            What each controller did.

        """
        return {
            name: controller.update([values[name] for values in assigned], signals)
            for name, controller in self.controllers.items()
        }

    def state_dict(self) -> dict[str, Any]:
        """Return ``{name: controller state}`` for every spread hyperparameter."""
        return {name: controller.state_dict() for name, controller in self.controllers.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`."""
        require_keys(state, *self.controllers)
        for name, controller in self.controllers.items():
            controller.load_state_dict(state[name])
