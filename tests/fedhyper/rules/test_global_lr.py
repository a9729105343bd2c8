"""GlobalLR (FedHyper-G) and UniversalGlobalLR, with hand-computed expected values."""

from __future__ import annotations

import pytest

from fedhyper.rules import GlobalLR, UniversalGlobalLR
from tests.support.tensors import D0, D1, assert_tl, tl


def test_global_lr_first_round_uses_alpha0_without_inner_product() -> None:
    rule = GlobalLR(initial_lr=1.5, hyper_lr=0.5)
    delta = tl(*D0)
    step = rule.step(delta)
    assert step.global_lr == 1.5
    assert step.hypergradient == 0.0
    assert step.client_lr is None
    assert_tl(step.update, [[1.5, 3.0], [0.75]])  # 1.5 * D0
    assert_tl(delta, [list(D0[0]), list(D0[1])])  # input not modified
    assert rule.initial_client_lr() is None


def test_global_lr_second_and_third_round_keep_unscaled_delta() -> None:
    rule = GlobalLR(initial_lr=1.5, hyper_lr=0.5)
    rule.step(tl(*D0))
    # alpha_1 = 1.5 + 0.5 * <D1, D0> = 1.5 + 0.5 * 0.7 = 1.85
    d1 = tl(*D1)
    step = rule.step(d1)
    assert step.hypergradient == pytest.approx(0.7, abs=1e-7)
    assert step.global_lr == pytest.approx(1.85, abs=1e-7)
    assert_tl(step.update, [[0.185, 0.37], [0.74]])  # 1.85 * D1
    for t in d1:  # the caller reuses its buffer: the rule must have kept its own copy
        t.mul_(1000.0)
    # D2 = ([1, 0], [0]): <D2, D1> with the UNSCALED D1 = 0.1 -> alpha_2 = 1.85 + 0.05 = 1.9.
    # (Had the scaled update 1.85 * D1 been kept, <D2, 1.85 D1> = 0.185 -> 1.9425.)
    step = rule.step(tl([1.0, 0.0], [0.0]))
    assert step.global_lr == pytest.approx(1.9, abs=1e-7)
    assert rule.alpha == pytest.approx(1.9, abs=1e-7)


def test_global_lr_opposing_update_shrinks_alpha() -> None:
    rule = GlobalLR(initial_lr=1.5, hyper_lr=0.1)
    rule.step(tl(*D0))
    # D1 = -D0: <D1, D0> = -5.25 -> alpha = 1.5 - 0.525 = 0.975
    step = rule.step(tl([-1.0, -2.0], [-0.5]))
    assert step.hypergradient == pytest.approx(-5.25, abs=1e-7)
    assert step.global_lr == pytest.approx(0.975, abs=1e-7)


def test_global_lr_clips_at_both_bounds() -> None:
    up = GlobalLR(initial_lr=1.5, hyper_lr=1.0)
    up.step(tl(*D0))
    # 1.5 + 5.25 = 6.75 -> clipped to 5
    assert up.step(tl(*D0)).global_lr == 5.0
    down = GlobalLR(initial_lr=1.5, hyper_lr=1.0)
    down.step(tl(*D0))
    # 1.5 - 5.25 = -3.75 -> clipped to 0.2; the update is 0.2 * (-D0)
    step = down.step(tl([-1.0, -2.0], [-0.5]))
    assert step.global_lr == 0.2
    assert_tl(step.update, [[-0.2, -0.4], [-0.1]])
    # From the floor, agreement climbs straight back: <-D0, -D0> = 5.25, 0.2 + 5.25 -> 5
    # (alpha is its own accumulator, clipped each round: no wind-up below the floor).
    assert down.step(tl([-1.0, -2.0], [-0.5])).global_lr == 5.0


def test_global_lr_rejects_unordered_bounds() -> None:
    with pytest.raises(ValueError, match="bounds"):
        GlobalLR(bounds=(5.0, 0.2))


def test_global_lr_normalised_uses_cosine_and_is_scale_invariant() -> None:
    # D0 = [3, 4], D1 = [4, 3]: cos = 24 / 25 = 0.96; alpha_1 = 1 + 0.5 * 0.96 = 1.48
    for scale in (1.0, 1000.0):
        rule = GlobalLR(initial_lr=1.0, hyper_lr=0.5, normalised=True)
        rule.step(tl([3.0 * scale, 4.0 * scale]))
        step = rule.step(tl([4.0 * scale, 3.0 * scale]))
        assert step.hypergradient == pytest.approx(0.96, abs=1e-6)
        assert step.global_lr == pytest.approx(1.48, abs=1e-6)
    # The raw rule on the x1000 deltas saturates: 1 + 0.5 * 24e6 -> 5.
    raw = GlobalLR(initial_lr=1.0, hyper_lr=0.5)
    raw.step(tl([3000.0, 4000.0]))
    assert raw.step(tl([4000.0, 3000.0])).global_lr == 5.0


def test_universal_scale_is_one_plus_clipped_accumulator() -> None:
    rule = UniversalGlobalLR()
    # round 0: acc = 0 -> update = D0
    step = rule.step(tl(*D0))
    assert step.global_lr == 1.0
    assert_tl(step.update, [list(D0[0]), list(D0[1])])
    # round 1: acc = 0 + 0.7 -> scale 1.7 -> update = 1.7 * D1
    step = rule.step(tl(*D1))
    assert step.global_lr == pytest.approx(1.7, abs=1e-7)
    assert_tl(step.update, [[0.17, 0.34], [0.68]])
    # round 2: D2 = -10 * D1: <D2, D1> = -10 * (0.01 + 0.04 + 0.16) = -2.1
    # acc = 0.7 - 2.1 = -1.4 -> clipped to -0.2 -> scale 0.8
    step = rule.step(tl([-1.0, -2.0], [-4.0]))
    assert step.global_lr == pytest.approx(0.8, abs=1e-7)
    # round 3: <D3, D2> with D3 = D2 (unscaled) = 1 + 4 + 16 = 21 -> acc = -0.2 + 21 -> 4
    assert rule.step(tl([-1.0, -2.0], [-4.0])).global_lr == pytest.approx(5.0, abs=1e-7)
