"""Seeded client faults for robustness tests: which client fails how, and poisoned weights.

The server sends the :class:`FaultPlan` with every training instruction
(:mod:`fedhyper.wire`); each sampled client draws its own fault from a generator seeded
by ``(seed, partition, round, attempt)``, so a run's faults are reproducible and do not
depend on which worker process serves the client. Nothing here knows about Flower:
``clients/faults.py`` applies the faults to messages.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from fedhyper.config import ExperimentConfig

__all__ = ["POISON_KINDS", "Fault", "FaultPlan", "InjectedFaultError", "poison_state"]

POISON_KINDS = ("nan", "inf", "scale", "shape", "dtype")
"""How a poisoned reply can be corrupted (``faults.poison``)."""

# Distinguishes the fault generator from the other seeded streams of a run.
_FAULT_STREAM = 0xFA17


class Fault(enum.Enum):
    """What a client does wrong in one round."""

    NONE = "none"
    CRASH = "crash"
    DELAY = "delay"
    POISON = "poison"


class InjectedFaultError(RuntimeError):
    """The exception a client raises for a ``crash`` fault."""


@dataclass(frozen=True)
class FaultPlan:
    """The fault settings of a run, as the clients receive them.

    Attributes
    ----------
    seed : int
        The experiment's seed.
    crash, delay, poison : float
        Probabilities of each fault (exclusive; their sum is at most 1).
    poison_kind : str
        One of :data:`POISON_KINDS`.
    poison_scale : float
        Factor of the ``scale`` poison.

    """

    seed: int
    crash: float = 0.0
    delay: float = 0.0
    poison: float = 0.0
    poison_kind: str = "nan"
    poison_scale: float = 1e3

    @classmethod
    def from_experiment(cls, config: ExperimentConfig) -> FaultPlan:
        """Read the plan from ``config.faults``; a delayed reply misses the round's deadline."""
        faults = config.faults
        return cls(
            seed=config.seed,
            crash=faults.crash_probability,
            delay=faults.delay_probability,
            poison=faults.poison_probability,
            poison_kind=faults.poison,
            poison_scale=faults.poison_scale,
        )

    @property
    def active(self) -> bool:
        """Whether any fault has a positive probability."""
        return self.crash + self.delay + self.poison > 0

    def draw(self, partition_id: int, server_round: int, attempt: int) -> Fault:
        """Return the fault of one client in one attempt of one round.

        Parameters
        ----------
        partition_id : int
            The client's partition.
        server_round : int
            The round, from 1.
        attempt : int
            0 for a round's first try, then 1, 2, ... for its retries.

        Returns
        -------
        Fault
            A pure function of the arguments and the plan.

        """
        if not self.active:
            return Fault.NONE
        rng = np.random.default_rng([self.seed, _FAULT_STREAM, partition_id, server_round, attempt])
        draw = float(rng.random())
        for fault, threshold in (
            (Fault.CRASH, self.crash),
            (Fault.DELAY, self.crash + self.delay),
            (Fault.POISON, self.crash + self.delay + self.poison),
        ):
            if draw < threshold:
                return fault
        return Fault.NONE


def poison_state(
    state: Mapping[str, torch.Tensor], kind: str, scale: float
) -> dict[str, torch.Tensor]:
    """Return a corrupted copy of a model's state dict.

    Parameters
    ----------
    state : mapping of str to Tensor
        The honest weights.
    kind : str
        ``nan`` or ``inf`` (every floating-point value), ``scale`` (floating-point values
        times ``scale``), ``shape`` (the first multi-row array loses its last row) or
        ``dtype`` (floating-point arrays as float64).
    scale : float
        Factor of ``scale``.

    Returns
    -------
    dict of str to Tensor
        New tensors; ``state`` is not modified.

    Raises
    ------
    ValueError
        For an unknown ``kind``.

    """
    if kind not in POISON_KINDS:
        raise ValueError(f"unknown poison {kind!r}; expected one of {POISON_KINDS}")
    poisoned = {key: value.clone() for key, value in state.items()}
    if kind == "shape":
        key = next(key for key, value in poisoned.items() if value.ndim and len(value) > 1)
        poisoned[key] = poisoned[key][:-1]
        return poisoned
    for key, value in poisoned.items():
        if not value.is_floating_point():
            continue
        if kind == "nan":
            value.fill_(float("nan"))
        elif kind == "inf":
            value.fill_(float("inf"))
        elif kind == "scale":
            value.mul_(scale)
        else:
            poisoned[key] = value.to(torch.float64)
    return poisoned
