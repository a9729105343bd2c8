r"""HDET for data-parallel replicas outside federated learning, as a ``torch`` LR scheduler.

Each of :math:`M` replicas (processes, or models in one process) owns an optimizer and an
:class:`HDETScheduler`. Every :math:`T` optimizer steps the replicas average their
parameters, and each calls :meth:`HDETScheduler.step` with the mean training loss of every
replica over the period. All schedulers run the same deterministic controller on the same
losses, so they agree on the base LR without exchanging it; each then sets its own LR
:math:`\bar\eta\,\rho_{\pi(\text{rank})}`. The replica-averaging itself is the caller's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from fedhyper.rules.base import require_keys
from fedhyper.rules.hdet import HDETSettings, SpreadHyperparameter

__all__ = ["HDETScheduler"]

Losses = float | Tensor | Sequence[float] | Mapping[int, float]


def _per_group(value: float | Sequence[float], count: int, key: str) -> list[float]:
    """Broadcast a scalar to ``count`` parameter groups, or check a per-group sequence."""
    if isinstance(value, int | float):
        return [float(value)] * count
    if len(value) != count:
        raise ValueError(f"{key} has {len(value)} entries for {count} parameter groups")
    return [float(v) for v in value]


class HDETScheduler(LRScheduler):
    r"""Moves each parameter group's base LR by HDET and sets this replica's LR in the spread.

    Each parameter group's LR is its own spread hyperparameter (named
    ``"param_groups.<i>.lr"``, so each draws its own permutation) centred on the group's
    LR at construction. Call :meth:`step` once per averaging period, after averaging.
    Warm-up and decay are counted in periods.

    Parameters
    ----------
    optimizer
        This replica's optimizer.
    replica_rank
        This replica's index, ``0 <= replica_rank < num_replicas``.
    num_replicas
        :math:`M`.
    settings
        Spread and meta-update settings (default: the paper's).
    final_lr
        Floor of the decay (scalar, or one per group); ``None``: no decay.
    decay_steps
        :math:`K`, periods after the warm-up over which the decay reaches ``final_lr``.
    min_lr, max_lr
        Bounds of the base LR (scalar, or one per group).

    Examples
    --------
    See ``docs/hdet.md`` for replicas trained and averaged in one process.

    """

    def __init__(
        self,
        optimizer: Optimizer,
        replica_rank: int,
        num_replicas: int,
        settings: HDETSettings | None = None,
        *,
        final_lr: float | Sequence[float] | None = None,
        decay_steps: int | None = None,
        min_lr: float | Sequence[float] = 0.0,
        max_lr: float | Sequence[float] = math.inf,
    ) -> None:
        # Like ReduceLROnPlateau, this does not call LRScheduler.__init__: that one takes
        # a step through get_lr(), while this scheduler only moves when given losses.
        if not 0 <= replica_rank < num_replicas:
            raise ValueError(f"replica_rank must lie in [0, {num_replicas}), got {replica_rank}")
        self.optimizer = optimizer
        self.replica_rank = replica_rank
        self.num_replicas = num_replicas
        groups = optimizer.param_groups
        initial_lrs = [float(group["lr"]) for group in groups]
        self.base_lrs = list(initial_lrs)
        floors: list[float | None] = (
            [None] * len(groups)
            if final_lr is None
            else list(_per_group(final_lr, len(groups), "final_lr"))
        )
        lows = _per_group(min_lr, len(groups), "min_lr")
        highs = _per_group(max_lr, len(groups), "max_lr")
        self.controllers = [
            SpreadHyperparameter(
                f"param_groups.{index}.lr",
                lr,
                settings,
                floor=floor,
                decay_steps=decay_steps,
                bounds=(low, high),
            )
            for index, (lr, floor, low, high) in enumerate(
                zip(initial_lrs, floors, lows, highs, strict=True)
            )
        ]
        self.last_epoch = 0
        self._apply_lrs()

    @property
    def shared_lrs(self) -> list[float]:
        r""":math:`\bar\eta` of each parameter group: the LR the spread is centred on."""
        return [controller.base for controller in self.controllers]

    def step(self, losses: Losses) -> None:  # type: ignore[override]
        r"""Close an averaging period: update the base LRs, then set this replica's LRs.

        Parameters
        ----------
        losses
            The replicas' mean training losses over the period: a sequence of all
            :math:`M` ordered by rank; a mapping ``{rank: loss}`` for the replicas that
            reported; or this replica's loss alone (float or scalar tensor), gathered from
            all replicas with ``torch.distributed``, which must then be initialised with
            a world size of :math:`M`.

        """
        by_rank = self._losses_by_rank(losses)
        for controller in self.controllers:
            values = controller.values(self.last_epoch, self.num_replicas)
            controller.update([values[rank] for rank in by_rank], list(by_rank.values()))
        self.last_epoch += 1
        self._apply_lrs()

    def _losses_by_rank(self, losses: Losses) -> dict[int, float]:
        if isinstance(losses, Mapping):
            unknown = [rank for rank in losses if not 0 <= rank < self.num_replicas]
            if unknown:
                raise ValueError(f"losses name ranks outside [0, {self.num_replicas}): {unknown}")
            return {int(rank): float(loss) for rank, loss in losses.items()}
        if isinstance(losses, Tensor | float | int):
            return dict(enumerate(self._gather(float(losses))))
        if len(losses) != self.num_replicas:
            raise ValueError(f"got {len(losses)} losses for {self.num_replicas} replicas")
        return {rank: float(loss) for rank, loss in enumerate(losses)}

    def _gather(self, loss: float) -> list[float]:
        distributed = torch.distributed
        if not (distributed.is_available() and distributed.is_initialized()):
            raise RuntimeError(
                "step(loss) with this replica's loss alone needs torch.distributed to be "
                "initialised; otherwise pass the losses of all replicas"
            )
        if distributed.get_world_size() != self.num_replicas:
            raise RuntimeError(
                f"torch.distributed world size {distributed.get_world_size()} differs from "
                f"num_replicas {self.num_replicas}"
            )
        gathered: list[Any] = [None] * self.num_replicas
        distributed.all_gather_object(gathered, loss)
        return [float(value) for value in gathered]

    def _apply_lrs(self) -> None:
        for group, controller in zip(self.optimizer.param_groups, self.controllers, strict=True):
            lr = controller.values(self.last_epoch, self.num_replicas)[self.replica_rank]
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Return ``{"last_epoch": int, "controllers": [one state per parameter group]}``."""
        return {
            "last_epoch": self.last_epoch,
            "controllers": [controller.state_dict() for controller in self.controllers],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict` and set this period's LRs."""
        require_keys(state_dict, "last_epoch", "controllers")
        states = state_dict["controllers"]
        if len(states) != len(self.controllers):
            raise ValueError(
                f"state has {len(states)} parameter groups, the optimizer {len(self.controllers)}"
            )
        for controller, state in zip(self.controllers, states, strict=True):
            controller.load_state_dict(state)
        self.last_epoch = int(state_dict["last_epoch"])
        self._apply_lrs()
