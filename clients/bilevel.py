"""FedMAID's client side: a client's share of the bilevel problem, one query at a time.

Every query carries the task's settings (:class:`~fedhyper.wire.BilevelQuery`) and the
tensors it needs, so a client keeps no state between queries; its shard (the
SuperNode's ``partition-id`` of the 12x12 task's Dirichlet split) is loaded once per
worker process. The maths is :mod:`fedhyper.bilevel.logistic`'s, unchanged, so a
federated run computes exactly what the centralised problem does.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict

from fedhyper.bilevel.fashion12 import load_fashion12
from fedhyper.bilevel.logistic import (
    LabelledData,
    local_descent,
    loss_smoothness,
    shard_gradient,
    shard_hessian_vector,
    shard_loss,
)
from fedhyper.errors import ConfigError
from fedhyper.wire import (
    BILEVEL_LOCAL_POINT_KEY,
    BILEVEL_POINT_KEY,
    BILEVEL_SHARD_GRADIENT_KEY,
    BILEVEL_SHARD_PRODUCT_KEY,
    BILEVEL_TENSORS_RECORD,
    BILEVEL_THETA_KEY,
    BILEVEL_VECTOR_KEY,
    CONFIG_RECORD,
    METRICS_RECORD,
    PARTITION_ID_KEY,
    BilevelQuery,
    ReportRecord,
    ShardInfo,
    ShardLoss,
)


@lru_cache(maxsize=2)
def _task_shards(task: BilevelQuery) -> list[LabelledData]:
    # Only the shards are used here: keep one test row, the fewest the loader allows.
    return load_fashion12(
        train_examples=task.train_examples,
        validation_examples=task.validation_examples,
        num_clients=task.num_partitions,
        alpha=task.alpha,
        seed=task.seed,
        test_examples=1,
        data_dir=task.data_dir or None,
        cache_dir=task.cache_dir or None,
    ).shards


def client_shard(query: BilevelQuery, context: Context) -> LabelledData:
    """Return this SuperNode's shard of the task the query describes.

    Raises
    ------
    ConfigError
        If the node has no integer ``partition-id`` in ``0 .. num_partitions - 1``.

    """
    partition = context.node_config.get(PARTITION_ID_KEY)
    if not isinstance(partition, int) or not 0 <= partition < query.num_partitions:
        raise ConfigError(
            f"node-config {PARTITION_ID_KEY}", partition, f"0..{query.num_partitions - 1}"
        )
    # The local-training settings change per query; the shard does not.
    return _task_shards(replace(query, local_steps=0, step_size=0.0))[partition]


def _read(message: Message) -> tuple[BilevelQuery, dict[str, torch.Tensor]]:
    query = BilevelQuery.from_record(message.content.config_records[CONFIG_RECORD])
    tensors = message.content.array_records.get(BILEVEL_TENSORS_RECORD)
    return query, {} if tensors is None else tensors.to_torch_state_dict()


def _reply(
    message: Message,
    tensors: dict[str, torch.Tensor],
    metrics: ReportRecord | None = None,
) -> Message:
    content = RecordDict({BILEVEL_TENSORS_RECORD: ArrayRecord(tensors)})
    if metrics is not None:
        content[METRICS_RECORD] = MetricRecord(metrics)
    return Message(content, reply_to=message)


def describe(message: Message, context: Context) -> Message:
    """Answer with the shard's size, smoothness constant and classes."""
    query, _ = _read(message)
    shard = client_shard(query, context)
    info = ShardInfo(
        num_examples=len(shard),
        smoothness=loss_smoothness(shard.features) if len(shard) else 0.0,
        classes=int(shard.labels.max()) + 1 if len(shard) else 0,
    )
    return _reply(message, {}, info.to_record())


def gradient(message: Message, context: Context) -> Message:
    """Answer with the shard's mean cross-entropy and its gradient at the point."""
    query, tensors = _read(message)
    shard = client_shard(query, context)
    point = tensors[BILEVEL_POINT_KEY]
    loss = ShardLoss(shard_loss(point, shard))
    return _reply(
        message, {BILEVEL_SHARD_GRADIENT_KEY: shard_gradient(point, shard)}, loss.to_record()
    )


def hessian_vector(message: Message, context: Context) -> Message:
    """Answer with the shard's Hessian at the point times the vector."""
    query, tensors = _read(message)
    shard = client_shard(query, context)
    product = shard_hessian_vector(tensors[BILEVEL_POINT_KEY], shard, tensors[BILEVEL_VECTOR_KEY])
    return _reply(message, {BILEVEL_SHARD_PRODUCT_KEY: product})


def local_descent_query(message: Message, context: Context) -> Message:
    """Answer with the shard's gradient at the point and the point after local steps."""
    query, tensors = _read(message)
    shard = client_shard(query, context)
    first, point = local_descent(
        tensors[BILEVEL_POINT_KEY],
        tensors[BILEVEL_THETA_KEY],
        shard,
        query.local_steps,
        query.step_size,
    )
    return _reply(message, {BILEVEL_SHARD_GRADIENT_KEY: first, BILEVEL_LOCAL_POINT_KEY: point})
