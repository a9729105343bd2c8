"""GlobalMomentumLR (FedHyper-GM), with hand-computed expected values."""

from __future__ import annotations

import pytest

from fedhyper.rules import GlobalMomentumLR, accumulator_for_global_lr
from tests.support.tensors import assert_tl, tl


def test_global_momentum_lr_momentum_and_clipping_over_rounds() -> None:
    rule = GlobalMomentumLR()  # beta = 1, acc in [-0.2, 4], momentum 0.9
    # round 0: m0 = D0 = [1, 0], acc = 0, update = D0
    step = rule.step(tl([1.0, 0.0]))
    assert (step.global_lr, step.hypergradient) == (1.0, 0.0)
    assert_tl(step.update, [[1.0, 0.0]])
    # round 1: D1 = [0.1, 0.2]; <m0, D1> = 0.1 -> acc = 0.1
    #   m1 = D1 + 0.9 m0 = [1.0, 0.2]; update = D1 + 0.1 m1 = [0.2, 0.22]
    step = rule.step(tl([0.1, 0.2]))
    assert step.hypergradient == pytest.approx(0.1, abs=1e-7)
    assert step.global_lr == pytest.approx(1.1, abs=1e-7)
    assert_tl(step.update, [[0.2, 0.22]])
    # round 2: D2 = [-1, 0]; <m1, D2> = -1 -> acc = 0.1 - 1 = -0.9 -> clipped to -0.2
    #   m2 = D2 + 0.9 m1 = [-0.1, 0.18]; update = D2 - 0.2 m2 = [-0.98, -0.036]
    step = rule.step(tl([-1.0, 0.0]))
    assert rule.accumulator == pytest.approx(-0.2, abs=1e-7)
    assert step.global_lr == pytest.approx(0.8, abs=1e-7)
    assert_tl(step.update, [[-0.98, -0.036]])
    # round 3: D3 = [0, 30]; <m2, D3> = 5.4 -> acc = -0.2 + 5.4 = 5.2 -> clipped to 4
    #   m3 = D3 + 0.9 m2 = [-0.09, 30.162]; update = D3 + 4 m3 = [-0.36, 150.648]
    step = rule.step(tl([0.0, 30.0]))
    assert step.hypergradient == pytest.approx(5.4, abs=1e-5)
    assert step.global_lr == pytest.approx(5.0, abs=1e-7)
    assert_tl(step.update, [[-0.36, 150.648]], tol=1e-4)


def test_global_momentum_lr_configurable_and_normalised() -> None:
    # momentum 0.5, normalised with beta = 0.1:
    # round 0: m0 = [3, 4]; round 1: D1 = [4, 3], cos(m0, D1) = 24/25 = 0.96 -> acc = 0.096
    #   m1 = D1 + 0.5 m0 = [5.5, 5]; update = D1 + 0.096 m1 = [4.528, 3.48]
    for scale in (1.0, 1000.0):
        rule = GlobalMomentumLR(hyper_lr=0.1, momentum=0.5, normalised=True)
        rule.step(tl([3.0 * scale, 4.0 * scale]))
        step = rule.step(tl([4.0 * scale, 3.0 * scale]))
        assert step.hypergradient == pytest.approx(0.96, abs=1e-6)
        assert step.global_lr == pytest.approx(1.096, abs=1e-6)
        assert_tl(step.update, [[4.528 * scale, 3.48 * scale]], tol=1e-5 * scale)


@pytest.mark.parametrize("alpha", [0.5, 0.75, 1.0, 1.5, 2.0])
def test_gm_accumulator_for_a_global_lr_reaches_that_lr_on_steady_updates(alpha: float) -> None:
    acc = accumulator_for_global_lr(alpha, 0.9)
    assert acc == pytest.approx(0.1 * (alpha - 1.0))
    # hyper_lr 0 freezes the accumulator: with the same update every round the step is
    # D + acc * m_t, m_t = D (1 - 0.9^(t+1)) / 0.1, which tends to alpha * D
    rule = GlobalMomentumLR(hyper_lr=0.0, initial_acc=acc)
    steps = [rule.step(tl([1.0, -2.0])).update for _ in range(200)]
    assert_tl(steps[0], [[1.0 + acc, -2.0 * (1.0 + acc)]])
    assert_tl(steps[-1], [[alpha, -2.0 * alpha]], tol=1e-5)


def test_global_momentum_lr_initial_accumulator_weights_the_first_step() -> None:
    # acc_init = -0.5 within bounds (-0.8, 4):
    # round 0: m0 = D0 = [2, 0]; update = D0 + (-0.5) m0 = [1, 0]; logged global LR 0.5
    rule = GlobalMomentumLR(bounds=(-0.8, 4.0), initial_acc=-0.5)
    assert rule.accumulator == -0.5
    step = rule.step(tl([2.0, 0.0]))
    assert step.global_lr == pytest.approx(0.5, abs=1e-7)
    assert_tl(step.update, [[1.0, 0.0]])
    # round 1: D1 = [0.1, 0]; <m0, D1> = 0.2 -> acc = -0.3; m1 = [1.9, 0]
    #   update = D1 - 0.3 m1 = [-0.47, 0]: a negative accumulator steps back along m
    step = rule.step(tl([0.1, 0.0]))
    assert step.global_lr == pytest.approx(0.7, abs=1e-7)
    assert_tl(step.update, [[-0.47, 0.0]])
    # the state round-trips the accumulator
    restored = GlobalMomentumLR(bounds=(-0.8, 4.0))
    restored.load_state_dict(rule.state_dict())
    assert restored.accumulator == pytest.approx(-0.3, abs=1e-7)
    with pytest.raises(ValueError, match="initial_acc"):
        GlobalMomentumLR(initial_acc=-0.5)  # outside the reference bounds (-0.2, 4)
