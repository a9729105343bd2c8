"""FedExP's step size, with hand-computed expected values."""

from __future__ import annotations

import pytest
from torch import Tensor

from fedhyper.rules import FedExP
from tests.support.tensors import assert_tl, tl


def fedexp_step_size(
    clients: list[list[Tensor]], mean: list[Tensor], eps: float, weights: list[float] | None = None
) -> float:
    """FedExP's step size for one round of these client updates and their mean."""
    rule = FedExP(eps)
    for client, weight in zip(clients, weights or [1.0] * len(clients), strict=True):
        rule.add_client(client, weight)
    return rule.step(mean).global_lr


def test_fedexp_step_size_values() -> None:
    # Opposing clients [1, 0], [-1, 0]: mean 0, sum |D_i|^2 = 2, |S| = 2, eps = 0.1:
    # 2 / (2 * 2 * (0 + 0.1)) = 5
    opposing = [tl([1.0, 0.0]), tl([-1.0, 0.0])]
    assert fedexp_step_size(opposing, tl([0.0, 0.0]), eps=0.1) == pytest.approx(5.0)
    # Identical clients: 2 / (4 * (1 + 0.001)) = 0.4995 -> floored at 1
    same = [tl([1.0, 0.0]), tl([1.0, 0.0])]
    assert fedexp_step_size(same, tl([1.0, 0.0]), eps=1e-3) == 1.0
    # [3, 0], [0, 4], [0, 0]: mean [1, 4/3], |mean|^2 = 25/9, sum = 25, |S| = 3
    #   eps = 0:   25 / (6 * 25/9) = 1.5
    #   eps = 0.2: 25 / (6 * (25/9 + 1/5)) = 25 / (6 * 134/45) = 375/268
    three = [tl([3.0, 0.0]), tl([0.0, 4.0]), tl([0.0, 0.0])]
    mean = tl([1.0, 4.0 / 3.0])
    assert fedexp_step_size(three, mean, eps=0.0) == pytest.approx(1.5, rel=1e-6)
    assert fedexp_step_size(three, mean, eps=0.2) == pytest.approx(375 / 268, rel=1e-6)
    # Weights [1, 1, 2]: mean [0.75, 1], |mean|^2 = 1.5625, sum p_i |D_i|^2 = 25/4 = 6.25
    #   6.25 / (2 * 1.5625) = 2
    weighted_mean = tl([0.75, 1.0])
    assert fedexp_step_size(three, weighted_mean, 0.0, weights=[1, 1, 2]) == pytest.approx(2.0)


def test_fedexp_rule_streams_clients_and_clears_them_each_round() -> None:
    rule = FedExP(eps=0.1)
    for client in (tl([1.0, 0.0]), tl([-1.0, 2.0])):
        rule.add_client(client)
    # mean [0, 1]: sum |D_i|^2 = 1 + 5 = 6, |S| = 2 -> 6 / (4 * (1 + 0.1)) = 1.3636...
    step = rule.step(tl([0.0, 1.0]))
    assert step.global_lr == pytest.approx(6 / 4.4)
    assert_tl(step.update, [[0.0, 6 / 4.4]])
    with pytest.raises(RuntimeError, match="add_client"):
        rule.step(tl([0.0, 1.0]))  # statistics were cleared by the previous step
    rule.add_client(tl([2.0, 0.0]))
    rule.add_client(tl([0.0, 0.0]))
    # mean [1, 0]: sum = 4, |S| = 2 -> 4 / (4 * 1.1) = 0.909 -> 1; update = [1, 0]
    step = rule.step(tl([1.0, 0.0]))
    assert step.global_lr == 1.0
    assert_tl(step.update, [[1.0, 0.0]])
