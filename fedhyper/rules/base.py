"""The interface every server-side learning-rate rule implements.

A rule is a small state machine in the style of ``optax``/``torch.optim``: ``step`` maps
the round's aggregated update to what the server adds to the model, and the whole state
is a ``state_dict`` that round-trips exactly, so a run can be checkpointed between rounds.
Rules know nothing about Flower or models: they see lists of tensors only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from fedhyper.rules.vector import clone_list

__all__ = ["ServerRule", "ServerStep", "apply_rule", "require_keys", "restore_tensors"]


@dataclass(frozen=True)
class ServerStep:
    r"""What a server rule decided in one round.

    Attributes
    ----------
    update
        Tensors to ADD to the trainable parameters: :math:`w_{t+1} = w_t + \text{update}`.
        Freshly allocated: they alias neither the input ``delta`` nor the rule's state.
    global_lr
        Effective global learning rate this round, for logging; ``1.0`` for rules that
        have none.
    client_lr
        Local learning rate the clients must train with in the NEXT round, for rules that
        schedule it (SL, Decay-SL); ``None`` otherwise.
    hypergradient
        The signal that drove the rule this round (the raw inner product, or the cosine
        in normalised mode, before multiplication by the hyper-LR); ``0.0`` when there
        is none (round 0, or rules without one).
    clients_diverged
        Whether the rule read the round's clients as diverged (their own loss grew
        several times over their training) and so stepped no further than their
        average; ``False`` for rules that do not probe.

    """

    update: list[Tensor]
    global_lr: float
    client_lr: float | None
    hypergradient: float
    clients_diverged: bool = False


class ServerRule(ABC):
    r"""A server-side rule mapping the aggregated update :math:`\Delta_t` to a model step.

    :math:`\Delta_t = \operatorname{aggregate}_i(w_{t,i}) - w_t` is *new minus old*, over
    the trainable floating-point parameters only (not BatchNorm statistics nor integer
    buffers). Flower's FedOpt pseudo-gradient is the opposite sign.
    """

    @abstractmethod
    def step(self, delta: Sequence[Tensor]) -> ServerStep:
        r"""Consume the round's aggregated update and return the model step.

        Parameters
        ----------
        delta
            :math:`\Delta_t`, new minus old. Not modified; the rule keeps its own copy
            if it needs one next round.

        """

    # An optional hook, not abstract: most rules read nothing but the averaged update.
    def observe_reports(self, means: Mapping[str, float]) -> None:  # noqa: B027
        """Take the round's client-rule reports, before :meth:`step`; ignored by default.

        Parameters
        ----------
        means
            Each key the clients' rule reported, mapped to its mean over the round's
            clients, weighted as their models are averaged.

        """

    def observe_probe_losses(  # noqa: B027
        self, before: Sequence[float], after: Sequence[float], previous: Sequence[float] = ()
    ) -> None:
        """Take each client's probe loss before and after training, before :meth:`step`.

        Called only for a rule with positive :attr:`probe_examples`; ignored by default.

        Parameters
        ----------
        before, after
            One value per client that replied, in the same order; NaN where a client
            sent none.
        previous
            The same clients' probe loss on the previous round's global model, for a
            rule that :attr:`probes_previous_model` (NaN where a client sent none; in the
            first round all are NaN).

        """

    @property
    def probe_examples(self) -> int:
        """Rows on which each client measures its loss before and after training (0: none).

        When positive, :meth:`observe_probe_losses` receives the losses each client
        measured.
        """
        return 0

    @property
    def probes_previous_model(self) -> bool:
        """Whether each client also measures its probe loss on the previous global model.

        It rebuilds that model from the step the server applied, so this needs positive
        :attr:`probe_examples` and :attr:`sends_applied_step`;
        :meth:`observe_probe_losses` then receives those losses as ``previous``.
        """
        return False

    @property
    def sends_applied_step(self) -> bool:
        r"""Whether the clients need the step applied last round, :math:`w_t - w_{t-1}`.

        The strategy then sends it as the previous-delta record instead of the unscaled
        :math:`\Delta_{t-1}`.
        """
        return False

    def initial_client_lr(self) -> float | None:
        """Local learning rate for the first round, or ``None`` if the rule does not set it."""
        return None

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Return the rule's full mutable state (floats, ints, tensor lists, ``None``).

        Hyperparameters are constructor arguments, not state. Tensors are copies.
        """

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict` (tensors are copied in)."""


def apply_rule(
    rule: ServerRule,
    current: Mapping[str, Tensor],
    averaged: Mapping[str, Tensor],
    keys: Sequence[str],
) -> tuple[dict[str, Tensor], ServerStep, list[Tensor]]:
    r"""Move :math:`w_t` by the rule's step on the clients' average: a round's server update.

    Parameters
    ----------
    rule
        The server rule; it consumes :math:`\Delta_t`.
    current
        :math:`w_t`: every ``state_dict`` entry of the model sent out this round.
    averaged
        The clients' average of every entry.
    keys
        The trainable floating-point keys, in model order.

    Returns
    -------
    new_state : dict of str to Tensor
        :math:`w_{t+1}`: ``current + update`` over ``keys``, the average elsewhere
        (buffers), each entry in ``current``'s dtype.
    step : ServerStep
        What the rule decided.
    delta : list of Tensor
        :math:`\Delta_t = \text{averaged} - w_t` over ``keys``.

    """
    delta = [averaged[key] - current[key] for key in keys]
    step = rule.step(delta)
    new_state = dict(averaged)
    for key, update in zip(keys, step.update, strict=True):
        new_state[key] = current[key] + update
    # Averages promote integer buffers to float; keep the model's dtypes.
    return {key: value.to(current[key].dtype) for key, value in new_state.items()}, step, delta


def require_keys(state: dict[str, Any], *keys: str) -> None:
    """Raise ``KeyError`` naming every key of ``keys`` missing from ``state``."""
    missing = [key for key in keys if key not in state]
    if missing:
        raise KeyError(f"state_dict is missing {missing}")


def restore_tensors(value: Sequence[Tensor] | None) -> list[Tensor] | None:
    """Copy an optional tensor list out of (or into) a state dict, so neither side aliases."""
    return None if value is None else clone_list(value)
