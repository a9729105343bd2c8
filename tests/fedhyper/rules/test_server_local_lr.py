"""ServerLocalLR (FedHyper-SL), with hand-computed expected values."""

from __future__ import annotations

import pytest

from fedhyper.rules import ServerLocalLR
from tests.support.tensors import assert_tl, tl


def test_server_local_lr_schedule_persists_and_clips_accumulator() -> None:
    rule = ServerLocalLR(initial_client_lr=0.01)  # acc in [-0.9, 9], lr in [0.001, 0.1]
    assert rule.initial_client_lr() == 0.01
    # round 0: no inner product; clients of round 1 keep eta_0; update is D0 itself
    step = rule.step(tl([1.0, 2.0]))
    assert (step.client_lr, step.global_lr, step.hypergradient) == (0.01, 1.0, 0.0)
    assert_tl(step.update, [[1.0, 2.0]])
    # round 1: <[0.5, 0], [1, 2]> = 0.5 -> acc = 0.5 -> lr = 0.01 * 1.5 = 0.015
    assert rule.step(tl([0.5, 0.0])).client_lr == pytest.approx(0.015, abs=1e-12)
    # round 2: <[0, 3], [0.5, 0]> = 0 -> acc stays 0.5: the LR persists at 0.015 (the
    # reference rebuilt it from eta_0 = 0.01 every round)
    step = rule.step(tl([0.0, 3.0]))
    assert step.hypergradient == 0.0
    assert step.client_lr == pytest.approx(0.015, abs=1e-12)
    assert rule.client_lr == pytest.approx(0.015, abs=1e-12)
    # round 3: <[0, 10], [0, 3]> = 30 -> acc = 30.5 -> clipped to 9 -> lr = 0.1 (= 10 eta_0)
    assert rule.step(tl([0.0, 10.0])).client_lr == pytest.approx(0.1, abs=1e-12)
    # round 4: <[0, -1], [0, 10]> = -10 -> acc = 9 - 10 = -1 -> clipped to -0.9 -> lr = 0.001.
    # Without the accumulator clip acc would be 20.5 and the LR still pinned at 0.1.
    assert rule.step(tl([0.0, -1.0])).client_lr == pytest.approx(0.001, abs=1e-12)
    # round 5: <[0, -0.5], [0, -1]> = 0.5 -> acc = -0.4 -> lr = 0.006
    assert rule.step(tl([0.0, -0.5])).client_lr == pytest.approx(0.006, abs=1e-12)


def test_server_local_lr_bounds_at_tenth_and_ten_times_eta0() -> None:
    rule = ServerLocalLR(initial_client_lr=0.01, acc_bounds=(-5.0, 50.0))
    rule.step(tl([1.0, 2.0]))
    # <[-1, -0.5], [1, 2]> = -2 -> acc = -2 -> 0.01 * (1 - 2) < 0 -> clipped to 0.001
    assert rule.step(tl([-1.0, -0.5])).client_lr == pytest.approx(0.001, abs=1e-12)
    # <[-20, -10], [-1, -0.5]> = 25 -> acc = 23 -> 0.24 -> clipped to 0.1
    assert rule.step(tl([-20.0, -10.0])).client_lr == pytest.approx(0.1, abs=1e-12)


def test_server_local_lr_normalised() -> None:
    # cos([4, 3], [3, 4]) = 0.96; beta = 0.5 -> acc = 0.48 -> lr = 0.02 * 1.48 = 0.0296
    rule = ServerLocalLR(initial_client_lr=0.02, hyper_lr=0.5, normalised=True)
    rule.step(tl([3000.0, 4000.0]))
    assert rule.step(tl([4000.0, 3000.0])).client_lr == pytest.approx(0.0296, abs=1e-9)
