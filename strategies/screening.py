"""Check every training reply before any strategy sees it.

The runner screens a round's replies once, for every strategy: a reply is aggregated only
if its model has exactly the global model's keys, shapes and dtypes, every value is
finite, its metrics are finite numbers forming a :class:`~fedhyper.wire.TrainReport`
with a positive aggregation weight, and its update is not absurdly larger than the
round's others. Whatever a client sends, no NaN, no
overflow and no mis-shaped array reaches an aggregate, an inner product or a learning
rate.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, Message

from fedhyper.wire import ARRAYS_RECORD, TrainReport, WireFormatError

__all__ = ["ArraySpec", "Screened", "array_spec", "screen_replies"]


@dataclass(frozen=True)
class Screened:
    """A round's training replies, sorted out.

    Attributes
    ----------
    accepted : list of Message
        Replies fit to aggregate, in the order given.
    rejected : list of (Message, str)
        Replies that carried content but failed a check, with the reason.
    failed : list of Message
        Error replies (the ClientApp raised or could not run).

    """

    accepted: list[Message]
    rejected: list[tuple[Message, str]]
    failed: list[Message]


ArraySpec = dict[str, tuple[tuple[int, ...], str]]
"""Each state-dict key's shape and NumPy dtype name."""


def array_spec(arrays: ArrayRecord) -> ArraySpec:
    """Return the keys, shapes and dtypes of a model's arrays."""
    return {key: (tuple(array.shape), array.dtype) for key, array in arrays.items()}


def screen_replies(
    replies: Sequence[Message],
    spec: ArraySpec,
    current: ArrayRecord,
    trainable_keys: Sequence[str],
    weight_key: str,
    max_norm_ratio: float,
) -> Screened:
    """Sort a round's training replies into accepted, rejected and failed.

    Parameters
    ----------
    replies : sequence of Message
        What the clients sent back.
    spec : ArraySpec
        The model's keys, shapes and dtypes: a reply must have exactly these. (Not the
        global arrays': Flower's FedAvg turns integer counters into floats.)
    current : ArrayRecord
        The global model sent out this round, from which updates are measured.
    trainable_keys : sequence of str
        Keys of the trainable floating-point parameters (the update's norm is over these).
    weight_key : str
        The reply metric the aggregation weights by; it must be a number > 0.
    max_norm_ratio : float
        Reject an update whose norm exceeds this multiple of a reference norm; 0 turns
        the check off. The reference is the smaller of the global model's norm (an
        update a hundred times the size of the whole model is absurd, even when every
        client of the round sends one) and the lower median of the round's update norms
        (an honest update's as long as more than half are honest; with two replies the
        smaller one, so a single huge update cannot shield itself). Norms are over the
        trainable parameters.

    Returns
    -------
    Screened
        The sorted replies.

    """
    failed = [reply for reply in replies if reply.has_error()]
    answered = [reply for reply in replies if not reply.has_error()]
    metric_keys = Counter(_metric_keys(reply) for reply in answered).most_common(1)
    usual_metrics = metric_keys[0][0] if metric_keys else frozenset()
    rejected: list[tuple[Message, str]] = []
    checked: list[Message] = []
    for reply in answered:
        problem = _content_problem(reply, spec, weight_key, usual_metrics)
        if problem is None:
            checked.append(reply)
        else:
            rejected.append((reply, problem))
    if max_norm_ratio == 0 or not checked:
        return Screened(accepted=checked, rejected=rejected, failed=failed)
    old = {key: current[key].numpy().astype(np.float64) for key in trainable_keys}
    norms = [_update_norm(reply, old) for reply in checked]
    references = [("the median update", statistics.median_low(norms))]
    model_norm = math.sqrt(sum(float(np.sum(np.square(value))) for value in old.values()))
    if model_norm > 0:  # a model initialised at zero has no scale yet
        references.append(("the model", model_norm))
    name, reference = min(references, key=lambda item: item[1])
    accepted = []
    for reply, norm in zip(checked, norms, strict=True):
        if norm > max_norm_ratio * reference:
            reason = f"update norm {norm:.3g} exceeds {max_norm_ratio:g} x {name} ({reference:.3g})"
            rejected.append((reply, reason))
        else:
            accepted.append(reply)
    return Screened(accepted=accepted, rejected=rejected, failed=failed)


def _metric_keys(reply: Message) -> frozenset[str]:
    return frozenset(key for record in reply.content.metric_records.values() for key in record)


def _content_problem(
    reply: Message,
    expected: ArraySpec,
    weight_key: str,
    usual_metrics: frozenset[str],
) -> str | None:
    """Return why a reply cannot be aggregated, or ``None`` if it can."""
    content = reply.content
    # Flower's averaging sums every ArrayRecord and weights by the first MetricRecord.
    if list(content.array_records) != [ARRAYS_RECORD] or len(content.metric_records) != 1:
        return "not exactly one model and one metrics record"
    arrays = content.array_records[ARRAYS_RECORD]
    if set(arrays) != set(expected):
        missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
        return f"model keys differ (missing {missing[:3]}, unexpected {extra[:3]})"
    for key, array in arrays.items():
        shape, dtype = expected[key]
        if (tuple(array.shape), array.dtype) != (shape, dtype):
            return f"{key} is {array.dtype}{list(array.shape)}, expected {dtype}{list(shape)}"
        try:
            values = array.numpy()
        # A payload that does not decode to its declared dtype and shape.
        except Exception as error:
            return f"{key} does not decode ({type(error).__name__})"
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            return f"{key} holds NaN or Inf"
    metrics = next(iter(content.metric_records.values()))
    if _metric_keys(reply) != usual_metrics:
        return "metric keys differ from the round's other replies"
    for key, value in metrics.items():
        if not isinstance(value, int | float) or not math.isfinite(value):
            return f"metric {key!r} is not a finite number ({value!r})"
    try:
        TrainReport.from_record(metrics)
    except WireFormatError as error:
        return str(error)
    weight = metrics.get(weight_key)
    if not isinstance(weight, int | float) or weight <= 0:
        return f"aggregation weight {weight_key!r} is missing or not > 0"
    return None


def _update_norm(reply: Message, old: dict[str, np.ndarray]) -> float:
    arrays = reply.content.array_records[ARRAYS_RECORD]
    squares = (
        float(np.sum(np.square(arrays[key].numpy().astype(np.float64) - value)))
        for key, value in old.items()
    )
    return math.sqrt(sum(squares))
