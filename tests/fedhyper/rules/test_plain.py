"""Plain, the FedAvg server rule."""

from __future__ import annotations

import pytest

from fedhyper.rules import Plain
from tests.support.tensors import assert_tl, tl


def test_plain_is_fedavg_and_copies() -> None:
    delta = tl([1.0, 2.0])
    step = Plain().step(delta)
    assert_tl(step.update, [[1.0, 2.0]])
    step.update[0].zero_()
    assert_tl(delta, [[1.0, 2.0]])  # the update does not alias the input


def test_plain_state_is_empty() -> None:
    rule = Plain()
    assert rule.state_dict() == {}
    rule.load_state_dict({})
    with pytest.raises(KeyError):
        rule.load_state_dict({"alpha": 1.0})
