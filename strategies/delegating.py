"""Strategies that wrap another Flower strategy and change one step of it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Strategy
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from strategies.state import load_strategy_state, strategy_state


class DelegatingStrategy(Strategy):
    """Forward every call to ``inner``; subclasses override what they change.

    Parameters
    ----------
    inner : FedAvg or DelegatingStrategy
        A strategy of Flower's FedAvg family (it owns sampling and aggregation), or
        another wrapper around one.

    """

    def __init__(self, inner: FedAvg | DelegatingStrategy) -> None:
        self.inner = inner

    @property
    def weighted_by_key(self) -> str:
        """The reply metric ``inner`` weights the average by."""
        return self.inner.weighted_by_key

    def summary(self) -> None:
        """Log the wrapped strategy's summary."""
        self.inner.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate to ``inner``."""
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Delegate to ``inner``."""
        return self.inner.aggregate_train(server_round, replies)

    def observe_rejected(self, server_round: int, rejected: Sequence[Message]) -> None:
        """Take the replies the round's screening rejected, just before :meth:`aggregate_train`.

        Forwarded to ``inner`` when it is a wrapper too. A strategy that learns from its
        clients overrides it: a rejected reply is one whose update was not finite, far
        larger than the others' or malformed.
        """
        if isinstance(self.inner, DelegatingStrategy):
            self.inner.observe_rejected(server_round, rejected)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate to ``inner``."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Delegate to ``inner``."""
        return self.inner.aggregate_evaluate(server_round, replies)

    def state_dict(self) -> dict[str, Any]:
        """Return ``inner``'s state (subclasses add their own)."""
        return {"inner": strategy_state(self.inner)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        load_strategy_state(self.inner, state["inner"])


class AveragedBuffers(DelegatingStrategy):
    """Let ``inner``'s server optimiser move only the trainable parameters.

    Flower's FedAvgM, FedAdam, FedYogi and FedAdagrad apply momentum and adaptive
    steps to every array, BatchNorm running statistics and counters included, which
    can drive a running variance negative. Here every non-trainable array is reset to
    the plain average of the clients' (in the model's dtype), as FedAvg would give it.

    Parameters
    ----------
    inner : FedAvg
        The server optimiser.
    trainable_keys : sequence of str
        State-dict keys of the trainable floating-point parameters.

    """

    def __init__(self, inner: FedAvg, trainable_keys: Sequence[str]) -> None:
        super().__init__(inner)
        self.trainable_keys = set(trainable_keys)
        self._dtypes: dict[str, torch.dtype] = {}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the model's dtypes, then delegate."""
        self._dtypes = {key: value.dtype for key, value in arrays.to_torch_state_dict().items()}
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate with ``inner``, then overwrite the buffers with their average."""
        replies = list(replies)
        arrays, metrics = super().aggregate_train(server_round, replies)
        valid = [reply.content for reply in replies if not reply.has_error()]
        if arrays is None or not valid:
            return arrays, metrics
        averaged = aggregate_arrayrecords(valid, self.weighted_by_key)
        state = dict(arrays.to_torch_state_dict())
        for key, value in averaged.to_torch_state_dict().items():
            if key not in self.trainable_keys:
                state[key] = value.to(self._dtypes[key])
        return ArrayRecord(state), metrics
