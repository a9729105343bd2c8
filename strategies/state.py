"""The state of any strategy the factory builds, as tensors a checkpoint can hold.

FedHyper's own strategies expose ``state_dict``/``load_state_dict``. Flower's FedAvg
family keeps its state in attributes; :data:`FLOWER_STATE` names them per class,
explicitly, with how each is stored (an ``ArrayRecord``, a list or a dict of NumPy
arrays), so that nothing is pickled and every value comes back bit for bit. A Flower
class not in the table is refused rather than checkpointed without its state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import FedAvg, FedAvgM, Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

__all__ = ["FLOWER_STATE", "Stateful", "load_strategy_state", "strategy_state"]


@runtime_checkable
class Stateful(Protocol):
    """A strategy that saves and restores its own state."""

    def state_dict(self) -> dict[str, Any]:
        """Return the full mutable state."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""


@dataclass(frozen=True)
class _Codec:
    """How one attribute is turned into tensors and back; ``None`` passes through."""

    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]

    def save(self, value: Any) -> Any:
        return None if value is None else self.encode(value)

    def load(self, value: Any) -> Any:
        return None if value is None else self.decode(value)


def _tensor(array: np.ndarray[Any, Any]) -> torch.Tensor:
    # A copy: the strategy keeps mutating its arrays after the checkpoint is taken.
    return torch.from_numpy(np.array(array, copy=True))


_ARRAY_RECORD = _Codec(
    encode=lambda record: dict(record.to_torch_state_dict()),
    decode=ArrayRecord,
)
_NDARRAY_LIST = _Codec(
    encode=lambda arrays: [_tensor(array) for array in arrays],
    decode=lambda tensors: [tensor.numpy() for tensor in tensors],
)
_NDARRAY_DICT = _Codec(
    encode=lambda arrays: {key: _tensor(array) for key, array in arrays.items()},
    decode=lambda tensors: {key: tensor.numpy() for key, tensor in tensors.items()},
)

FLOWER_STATE: dict[type[FedAvg], dict[str, _Codec]] = {
    FedAvgM: {"current_arrays": _ARRAY_RECORD, "momentum_vector": _NDARRAY_LIST},
    # FedAdam, FedYogi and FedAdagrad.
    FedOpt: {"current_arrays": _NDARRAY_DICT, "m_t": _NDARRAY_DICT, "v_t": _NDARRAY_DICT},
    FedAvg: {},
}
"""Per Flower class, the attributes that change between rounds and how to store them.

Looked up along the class's MRO, so the most specific entry applies; a test checks that
these classes have no other attribute than their settings and these.
"""


def _flower_attributes(strategy: Strategy) -> dict[str, _Codec]:
    for cls in type(strategy).__mro__:
        if cls in FLOWER_STATE:
            return FLOWER_STATE[cls]
    raise TypeError(
        f"{type(strategy).__name__} has neither state_dict() nor an entry in FLOWER_STATE; "
        "its state would be lost in a checkpoint"
    )


def strategy_state(strategy: Strategy) -> dict[str, Any]:
    """Return a strategy's full state, made of tensors, numbers, lists, dicts and ``None``.

    Parameters
    ----------
    strategy : Strategy
        Any strategy of :mod:`strategies.factory`.

    Returns
    -------
    dict
        The state; the strategy keeps no reference to it.

    Raises
    ------
    TypeError
        For a strategy whose state is unknown.

    """
    if isinstance(strategy, Stateful):
        return strategy.state_dict()
    return {
        name: codec.save(getattr(strategy, name))
        for name, codec in _flower_attributes(strategy).items()
    }


def load_strategy_state(strategy: Strategy, state: dict[str, Any]) -> None:
    """Restore a state returned by :func:`strategy_state` into a freshly built strategy.

    Raises
    ------
    KeyError
        If ``state`` lacks an attribute the strategy keeps.

    """
    if isinstance(strategy, Stateful):
        strategy.load_state_dict(state)
        return
    for name, codec in _flower_attributes(strategy).items():
        setattr(strategy, name, codec.load(state[name]))
