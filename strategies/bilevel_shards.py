"""The training shards of FedMAID's lower level, held by clients and asked for by round.

:class:`FederatedShards` is a :class:`~fedhyper.bilevel.logistic.TrainingShards` whose
every call is one exchange with all clients (full participation), so the
problem built on it computes exactly what the centralised one does; it counts the
rounds it sends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedhyper.config import SimulationConfig
from fedhyper.errors import FedHyperError
from fedhyper.wire import (
    BILEVEL_DESCRIBE_ACTION,
    BILEVEL_GRADIENT_ACTION,
    BILEVEL_HESSIAN_VECTOR_ACTION,
    BILEVEL_LOCAL_DESCENT_ACTION,
    BILEVEL_LOCAL_POINT_KEY,
    BILEVEL_POINT_KEY,
    BILEVEL_SHARD_GRADIENT_KEY,
    BILEVEL_SHARD_PRODUCT_KEY,
    BILEVEL_TENSORS_RECORD,
    BILEVEL_THETA_KEY,
    BILEVEL_VECTOR_KEY,
    CONFIG_RECORD,
    METRICS_RECORD,
    BilevelQuery,
    ShardInfo,
    ShardLoss,
)
from strategies.federation import exchange


class BilevelRoundError(FedHyperError):
    """A client did not answer a round: the exact method needs every client's term."""


class FederatedShards:
    """Every client's shard, reached through the grid (a ``TrainingShards``).

    Parameters
    ----------
    grid : Grid
        The connected federation.
    node_ids : sequence of int
        Every client's SuperNode, in client (partition) order: the order in which
        the terms are summed, as the centralised problem sums its shards.
    query : BilevelQuery
        The task's settings, sent with every query.
    simulation : SimulationConfig
        How long to wait for one round's replies, and how often to poll for them.

    Notes
    -----
    Construction sends the describe round (sizes, smoothness constants); clients with
    an empty shard take no part in the rounds after it. :attr:`rounds` counts every
    round sent, the describe round included.

    """

    def __init__(
        self,
        grid: Grid,
        node_ids: Sequence[int],
        query: BilevelQuery,
        simulation: SimulationConfig,
    ) -> None:
        self.grid = grid
        self.query = query
        self.simulation = simulation
        self.rounds = 0
        self.node_ids = list(node_ids)
        infos = [
            ShardInfo.from_record(reply.content.metric_records[METRICS_RECORD])
            for reply in self._ask(BILEVEL_DESCRIBE_ACTION, {})
        ]
        self.node_ids = [
            node_id for node_id, info in zip(self.node_ids, infos, strict=True) if info.num_examples
        ]
        held = [info for info in infos if info.num_examples]
        if not held:
            raise BilevelRoundError("no client holds training rows")
        total = sum(info.num_examples for info in held)
        self._weights = [info.num_examples / total for info in held]
        self._data_smoothness = sum(
            weight * info.smoothness for weight, info in zip(self._weights, held, strict=True)
        )
        self._classes = max(info.classes for info in held)

    @property
    def weights(self) -> list[float]:
        """``p_k = n_k / n`` of the clients that hold rows."""
        return self._weights

    @property
    def data_smoothness(self) -> float:
        """``Σ_k p_k L_k`` from the clients' own constants."""
        return self._data_smoothness

    @property
    def classes(self) -> int:
        """One more than the largest label any client holds."""
        return self._classes

    def losses_and_gradients(self, x: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
        """One round: every client's ``(CE_k(x), ∇CE_k(x))``."""
        replies = self._ask(BILEVEL_GRADIENT_ACTION, {BILEVEL_POINT_KEY: x})
        return [
            (
                ShardLoss.from_record(reply.content.metric_records[METRICS_RECORD]).loss,
                _tensor(reply, BILEVEL_SHARD_GRADIENT_KEY),
            )
            for reply in replies
        ]

    def hessian_vectors(self, x: torch.Tensor, vector: torch.Tensor) -> list[torch.Tensor]:
        """One round: every client's ``∇²CE_k(x) · vector``."""
        replies = self._ask(
            BILEVEL_HESSIAN_VECTOR_ACTION, {BILEVEL_POINT_KEY: x, BILEVEL_VECTOR_KEY: vector}
        )
        return [_tensor(reply, BILEVEL_SHARD_PRODUCT_KEY) for reply in replies]

    def local_descents(
        self, x: torch.Tensor, theta: torch.Tensor, steps: int, step_size: float
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One round: every client's gradient at ``x`` and its point after local steps."""
        replies = self._ask(
            BILEVEL_LOCAL_DESCENT_ACTION,
            {BILEVEL_POINT_KEY: x, BILEVEL_THETA_KEY: theta},
            replace(self.query, local_steps=steps, step_size=step_size),
        )
        return [
            (_tensor(reply, BILEVEL_SHARD_GRADIENT_KEY), _tensor(reply, BILEVEL_LOCAL_POINT_KEY))
            for reply in replies
        ]

    def _ask(
        self,
        action: str,
        tensors: dict[str, torch.Tensor],
        query: BilevelQuery | None = None,
    ) -> list[Message]:
        """Send one round to every client; return the replies in client order."""
        instruction = (query or self.query).to_record()
        messages = [
            Message(
                RecordDict(
                    {
                        CONFIG_RECORD: ConfigRecord(instruction),
                        BILEVEL_TENSORS_RECORD: ArrayRecord(tensors),
                    }
                ),
                dst_node_id=node_id,
                message_type=f"{MessageType.QUERY}.{action}",
            )
            for node_id in self.node_ids
        ]
        self.rounds += 1
        replies = {
            reply.metadata.src_node_id: reply
            for reply in exchange(self.grid, messages, self.simulation)
        }
        for node_id in self.node_ids:
            reply = replies.get(node_id)
            if reply is None:
                raise BilevelRoundError(
                    f"round {self.rounds} ({action}): node {node_id} did not answer within "
                    f"{self.simulation.round_timeout_s:g} s"
                )
            if reply.has_error():
                raise BilevelRoundError(
                    f"round {self.rounds} ({action}): node {node_id} failed: {reply.error.reason}"
                )
        return [replies[node_id] for node_id in self.node_ids]


def _tensor(reply: Message, key: str) -> torch.Tensor:
    return torch.from_numpy(reply.content.array_records[BILEVEL_TENSORS_RECORD][key].numpy())
