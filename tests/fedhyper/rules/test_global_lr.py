"""Tests for fedhyper.rules with hand-computed expected values (worked out in comments)."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from fedhyper.rules import (
    DecayGlobal,
    DecayLocal,
    FedExP,
    GlobalLR,
    GlobalMomentumLR,
    HypergradientLocalLR,
    Plain,
    ServerLocalLR,
    ServerRule,
    ServerStep,
    UniversalGlobalLR,
    accumulator_for_global_lr,
    clone_list,
    cosine,
    inner,
    sq_norm,
)


def tl(*rows: list[float]) -> list[Tensor]:
    """Tensor list from plain rows (float32, like model parameters)."""
    return [torch.tensor(r, dtype=torch.float32) for r in rows]


def assert_tl(actual: list[Tensor], expected: list[list[float]], tol: float = 1e-6) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, torch.tensor(e, dtype=a.dtype), atol=tol, rtol=0)


# Two-tensor deltas used across tests.
# D0 = ([1, 2], [0.5]):   |D0|^2 = 1 + 4 + 0.25 = 5.25
# D1 = ([0.1, 0.2], [0.4]): <D1, D0> = 0.1 + 0.4 + 0.2 = 0.7
D0 = ([1.0, 2.0], [0.5])
D1 = ([0.1, 0.2], [0.4])


# --------------------------------------------------------------------------- vector ops


def test_inner_and_norm_small() -> None:
    a, b = tl([1.0, 2.0], [3.0]), tl([4.0, -5.0], [0.5])
    assert inner(a, b) == 1 * 4 - 2 * 5 + 3 * 0.5  # -4.5
    assert sq_norm(a) == pytest.approx(14.0, abs=1e-12)  # 1 + 4 + 9
    assert cosine(a, a) == pytest.approx(1.0, abs=1e-12)
    assert cosine(a, tl([0.0, 0.0], [0.0])) == 0.0  # zero vector: no direction
    assert inner([], []) == 0.0
    with pytest.raises(ValueError, match="length"):
        inner(a, a[:1])


def test_inner_accumulates_in_float64() -> None:
    # 1e8 followed by 1000 ones: the exact sum is 100_001_000. Float32 spacing at 1e8 is 8,
    # so a float32 accumulation cannot represent it (torch's float32 sum gives 100001008).
    big = [torch.tensor([1e8] + [1.0] * 1000, dtype=torch.float32)]
    ones = [torch.ones(1001, dtype=torch.float32)]
    assert big[0].sum().item() != 100_001_000.0  # the failure mode being guarded against
    assert inner(big, ones) == 100_001_000.0
    # Across tensors as well: 1e8 in one tensor, 1000 ones in another.
    split = [torch.tensor([1e8]), torch.ones(1000)]
    assert inner(split, [torch.ones(1), torch.ones(1000)]) == 100_001_000.0
    # Squared norm: 1e4^2 + 1000 * 1 = 100_001_000.
    assert sq_norm([torch.tensor([1e4] + [1.0] * 1000)]) == 100_001_000.0


def test_clone_list_is_detached() -> None:
    t = tl([2.0, -1.0])
    c = clone_list(t)
    c[0].add_(1.0)
    assert_tl(t, [[2.0, -1.0]])  # clone shares no storage


# --------------------------------------------------------------------------- FedHyper-G


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


# --------------------------------------------------------------------------- FedHyper-GM


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


# --------------------------------------------------------------------------- FedHyper-SL


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


# --------------------------------------------------------------------------- baselines


def test_decay_global_values() -> None:
    rule = DecayGlobal(initial_lr=2.0)
    # t = 0, 1, 2: 2, 2 * 0.995 = 1.99, 2 * 0.995^2 = 2 * 0.990025 = 1.98005
    for expected in (2.0, 1.99, 1.98005):
        step = rule.step(tl([1.0, -1.0]))
        assert step.global_lr == pytest.approx(expected, abs=1e-12)
        assert_tl(step.update, [[expected, -expected]])
        assert step.client_lr is None


def test_decay_local_values() -> None:
    rule = DecayLocal(initial_client_lr=0.1)
    # round t trains with 0.1 * 0.995^t: t = 0 -> 0.1, t = 1 -> 0.0995, t = 2 -> 0.0990025
    assert rule.initial_client_lr() == 0.1
    steps = [rule.step(tl([1.0, -1.0])) for _ in range(2)]
    assert steps[0].client_lr == pytest.approx(0.0995, abs=1e-12)
    assert steps[1].client_lr == pytest.approx(0.0990025, abs=1e-12)
    assert all(s.global_lr == 1.0 for s in steps)
    assert_tl(steps[1].update, [[1.0, -1.0]])
    with pytest.raises(ValueError, match="decay"):
        DecayLocal(0.1, decay=1.5)


def test_plain_is_fedavg_and_copies() -> None:
    delta = tl([1.0, 2.0])
    step = Plain().step(delta)
    assert_tl(step.update, [[1.0, 2.0]])
    step.update[0].zero_()
    assert_tl(delta, [[1.0, 2.0]])  # the update does not alias the input


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


# --------------------------------------------------------------------------- state dicts


def _deltas(seed: int, rounds: int) -> list[list[Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    # Small magnitudes so the raw inner products (~0.1) do not saturate the bounds.
    return [
        [0.1 * torch.randn(3, 2, generator=gen), 0.1 * torch.randn(4, generator=gen)]
        for _ in range(rounds)
    ]


RULE_FACTORIES: dict[str, Callable[[], ServerRule]] = {
    "G": lambda: GlobalLR(initial_lr=1.2, hyper_lr=2.0),
    "G-normalised": lambda: GlobalLR(hyper_lr=0.3, normalised=True),
    "GM": lambda: GlobalMomentumLR(hyper_lr=2.0),
    "GM-normalised": lambda: GlobalMomentumLR(hyper_lr=0.3, normalised=True),
    "SL": lambda: ServerLocalLR(initial_client_lr=0.05, hyper_lr=2.0),
    "SL-normalised": lambda: ServerLocalLR(initial_client_lr=0.05, hyper_lr=0.3, normalised=True),
    "universal": lambda: UniversalGlobalLR(hyper_lr=3.0),
    "decay-G": lambda: DecayGlobal(initial_lr=1.5),
    "decay-SL": lambda: DecayLocal(initial_client_lr=0.05),
    "FedExP": lambda: FedExP(eps=1e-3),
}


def _run_round(rule: ServerRule, delta: list[Tensor]) -> ServerStep:
    if isinstance(rule, FedExP):
        # two clients whose mean is delta: 1.5 delta and 0.5 delta
        rule.add_client([1.5 * d for d in delta])
        rule.add_client([0.5 * d for d in delta])
    return rule.step(delta)


def _same_step(a: ServerStep, b: ServerStep) -> bool:
    return (a.global_lr, a.client_lr, a.hypergradient) == (
        b.global_lr,
        b.client_lr,
        b.hypergradient,
    ) and all(torch.equal(x, y) for x, y in zip(a.update, b.update, strict=True))


@pytest.mark.parametrize("name", sorted(RULE_FACTORIES))
def test_state_dict_round_trip_gives_identical_future_steps(name: str) -> None:
    factory = RULE_FACTORIES[name]
    deltas = _deltas(seed=7, rounds=3)
    original = factory()
    for delta in deltas[:2]:
        _run_round(original, delta)
    state = original.state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)  # checkpointable as is
    # Step the original first: a state_dict aliasing live state would change under us.
    expected = _run_round(original, deltas[2])
    # Load the same in-memory state twice: a load_state_dict that aliased it would let the
    # first restored rule's in-place updates leak into the second.
    for _ in range(2):
        restored = factory()
        restored.load_state_dict(state)
        assert _same_step(_run_round(restored, deltas[2]), expected)
    buffer.seek(0)
    restored = factory()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert _same_step(_run_round(restored, deltas[2]), expected)
    if not isinstance(original, FedExP):  # FedExP's step size does not depend on history
        # A fresh rule that skipped the 2 rounds must differ, else the test proves nothing.
        assert not _same_step(_run_round(factory(), deltas[2]), expected)


def test_plain_state_is_empty() -> None:
    rule = Plain()
    assert rule.state_dict() == {}
    rule.load_state_dict({})
    with pytest.raises(KeyError):
        rule.load_state_dict({"alpha": 1.0})


def test_load_state_dict_reports_missing_keys() -> None:
    with pytest.raises(KeyError, match="previous_delta"):
        GlobalLR().load_state_dict({"alpha": 1.0})


# --------------------------------------------------------------------------- FedHyper-CL
# A single 2-vector parameter theta with loss <g, theta>: the gradient is g exactly, so
# plain SGD moves theta by s_k = -lr_k * g and every term of the rule is hand-computable.
G = [1.0, 2.0]  # |G|^2 = 5


def _controller(
    base_lr: float,
    global_delta: list[float] | None,
    coupling: float,
    skip_first_batch: bool = False,
    multiplier: float = 1.0,
    bounds: tuple[float, float] = (0.1, 10.0),
) -> tuple[torch.nn.Parameter, torch.optim.SGD, HypergradientLocalLR]:
    theta = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([theta], lr=123.0)  # the controller must overwrite this
    delta = None if global_delta is None else tl(global_delta)
    controller = HypergradientLocalLR(
        [theta], optimizer, base_lr, delta, coupling, skip_first_batch, multiplier, bounds
    )
    return theta, optimizer, controller


def _sgd_step(
    theta: torch.nn.Parameter,
    optimizer: torch.optim.Optimizer,
    controller: HypergradientLocalLR,
    grad: list[float],
) -> float:
    optimizer.zero_grad()
    (torch.tensor(grad) * theta).sum().backward()
    controller.before_step()
    optimizer.step()
    controller.after_step()
    lr: float = optimizer.param_groups[0]["lr"]
    return lr


def test_client_lr_follows_rule_step_by_step() -> None:
    # eta_0 = 0.1, Delta = [1, 0] (<G, Delta> = 1), c = 0.5, no skipping.
    theta, opt, ctrl = _controller(0.1, [1.0, 0.0], coupling=0.5)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    ctrl.start_epoch()
    # step 1 (lr 0.1): s1 = -0.1 G; x = 0.5 <s1, Delta> = -0.05; y = <s1, Delta> = -0.1
    #   gamma = 0.85 -> beta = 0.85 -> lr = 0.085
    assert _sgd_step(theta, opt, ctrl, G) == pytest.approx(0.085, rel=1e-6)
    # step 2 (lr 0.085): s2 = -0.085 G; x = -0.0425; y = <s2, s1> = 0.085 * 0.1 * 5 = 0.0425
    #   gamma = 1 -> lr stays 0.085
    assert _sgd_step(theta, opt, ctrl, G) == pytest.approx(0.085, rel=1e-6)
    # step 3 (lr 0.085): s3 = -0.085 G; x = -0.0425; y = 0.085^2 * 5 = 0.036125
    #   gamma = 0.993625 -> beta = 0.85 * 0.993625 = 0.84458125 -> lr = 0.084458125
    assert _sgd_step(theta, opt, ctrl, G) == pytest.approx(0.084458125, rel=1e-6)
    assert ctrl.multiplier == pytest.approx(0.84458125, rel=1e-6)
    # theta moved by the LRs actually used: -(0.1 + 0.085 + 0.085) G
    assert_tl([theta.detach()], [[-0.27, -0.54]])
    stats = ctrl.stats()
    expected = {
        "lr_first": 0.1,
        "lr_last": 0.085,
        "lr_mean": 0.09,  # (0.1 + 0.085 + 0.085) / 3
        "lr_min": 0.085,
        "lr_max": 0.1,
        "x_mean": -0.045,  # (-0.05 - 0.0425 - 0.0425) / 3
        "y_mean": -0.007125,  # (-0.1 + 0.0425 + 0.036125) / 3
        "multiplier": 0.84458125,
        "steps": 3.0,
        "counted_steps": 3.0,
    }
    assert stats == pytest.approx(expected, rel=1e-5, abs=1e-8)
    report = {"x-mean": -0.045, "y-mean": -0.007125, "multiplier": 0.84458125}
    assert ctrl.report() == pytest.approx(report, rel=1e-5)
    assert ctrl.state_dict() == pytest.approx({"multiplier": 0.84458125}, rel=1e-6)


def test_client_lr_skips_first_batch_of_each_epoch_without_touching_s_prev() -> None:
    theta, opt, ctrl = _controller(0.1, [1.0, 0.0], coupling=0.5, skip_first_batch=True)
    ctrl.start_epoch()
    # epoch 1, step 1: skipped -> lr stays 0.1, beta stays 1, s_prev stays Delta
    assert _sgd_step(theta, opt, ctrl, G) == pytest.approx(0.1)
    # step 2 is counted like step 1 above (compared with Delta): lr 0.085
    assert _sgd_step(theta, opt, ctrl, G) == pytest.approx(0.085, rel=1e-6)
    # step 3: y = <s3, s2> = 0.0425 = -x -> lr stays 0.085
    assert _sgd_step(theta, opt, ctrl, G) == pytest.approx(0.085, rel=1e-6)
    ctrl.start_epoch()
    # epoch 2, step 1: skipped, with a different gradient [0, 10]: no LR change
    assert _sgd_step(theta, opt, ctrl, [0.0, 10.0]) == pytest.approx(0.085, rel=1e-6)
    # step 2: compared with epoch 1's LAST COUNTED step s3 = -0.085 G:
    #   x = -0.0425, y = 0.085^2 * 5 = 0.036125 -> lr = 0.084458125.
    #   (Had the skipped step replaced s_prev: y = <-0.085 G, [0, -0.85]> = 0.1445,
    #   gamma = min(1.1, 1.102) -> lr = 0.0935.)
    assert _sgd_step(theta, opt, ctrl, G) == pytest.approx(0.084458125, rel=1e-6)
    stats = ctrl.stats()
    assert (stats["steps"], stats["counted_steps"]) == (5.0, 3.0)


def test_client_lr_growth_cap_and_upper_bound() -> None:
    # eta_0 = 1, no Delta (first round), beta bounds (0.1, 1.2)
    theta, opt, ctrl = _controller(1.0, None, coupling=0.5, bounds=(0.1, 1.2))
    ctrl.start_epoch()
    # step 1: x = 0 and y = <s1, 0> = 0 -> gamma = 1 -> lr 1
    assert _sgd_step(theta, opt, ctrl, G) == pytest.approx(1.0)
    # step 2: y = <-G, -G> = 5 -> 1 + 5 = 6 -> capped at 1.1 -> lr 1.1
    assert _sgd_step(theta, opt, ctrl, G) == pytest.approx(1.1, rel=1e-6)
    # step 3: y = 1.1 * 5 -> 1.1 again -> beta = 1.21 -> clipped to 1.2
    assert _sgd_step(theta, opt, ctrl, G) == pytest.approx(1.2, rel=1e-6)
    assert _sgd_step(theta, opt, ctrl, G) == pytest.approx(1.2, rel=1e-6)


def test_client_lr_lower_bound() -> None:
    # eta_0 = 1, Delta = [10, 20], c = 1: step 1 s1 = -G, <s1, Delta> = -50
    #   x = -50, y = -50 -> gamma = -99 -> beta = -99 -> clipped to 0.1
    theta, opt, ctrl = _controller(1.0, [10.0, 20.0], coupling=1.0)
    ctrl.start_epoch()
    assert _sgd_step(theta, opt, ctrl, G) == pytest.approx(0.1, rel=1e-6)


def test_client_lr_carried_multiplier_sets_initial_lr() -> None:
    theta, opt, ctrl = _controller(0.1, None, coupling=0.5, multiplier=2.0)
    assert ctrl.multiplier == 2.0
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    ctrl.start_epoch()
    # first step: gamma = 1 (no Delta, s_prev = 0); theta moved by the carried LR 0.2
    assert _sgd_step(theta, opt, ctrl, G) == pytest.approx(0.2)
    assert_tl([theta.detach()], [[-0.2, -0.4]])


def test_client_lr_loaded_state_sets_the_lr_within_its_bounds() -> None:
    _, opt, ctrl = _controller(0.1, None, coupling=0.5, bounds=(0.1, 10.0))
    ctrl.load_state_dict({"multiplier": 3.0})
    assert (ctrl.multiplier, opt.param_groups[0]["lr"]) == (3.0, pytest.approx(0.3))
    ctrl.load_state_dict({"multiplier": 50.0})  # clipped to the upper bound 10
    assert (ctrl.multiplier, opt.param_groups[0]["lr"]) == (10.0, pytest.approx(1.0))


def test_client_lr_rejects_mismatched_global_delta() -> None:
    theta = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([theta], lr=0.1)
    with pytest.raises(ValueError, match="shape"):
        HypergradientLocalLR([theta], opt, 0.1, [torch.zeros(3)], coupling=0.1)
    with pytest.raises(ValueError, match="global_delta"):
        HypergradientLocalLR([theta], opt, 0.1, [], coupling=0.1)


@pytest.mark.parametrize("optimizer_name", ["sgd-momentum", "adam"])
def test_client_lr_drives_sgd_momentum_and_adam(optimizer_name: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": params[:2]}, {"params": params[2:]}]  # two groups, both driven
    optimizer: torch.optim.Optimizer
    if optimizer_name == "adam":
        optimizer = torch.optim.Adam(groups, lr=0.01)
    else:
        optimizer = torch.optim.SGD(groups, lr=0.01, momentum=0.5)
    delta = [0.01 * torch.randn_like(p) for p in params]
    delta_before = clone_list(delta)
    ctrl = HypergradientLocalLR(params, optimizer, 0.01, delta, coupling=0.1)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for _ in range(2):  # 2 epochs of 4 batches
        ctrl.start_epoch()
        for batch in range(4):
            optimizer.zero_grad()
            xb, yb = x[4 * batch : 4 * batch + 4], y[4 * batch : 4 * batch + 4]
            torch.nn.functional.mse_loss(model(xb), yb).backward()
            ctrl.before_step()
            optimizer.step()
            ctrl.after_step()
            assert all(g["lr"] == pytest.approx(ctrl.lr) for g in optimizer.param_groups)
    stats = ctrl.stats()
    assert (stats["steps"], stats["counted_steps"]) == (8.0, 6.0)
    assert ctrl.lr != 0.01  # the rule moved the LR
    assert 0.1 <= ctrl.multiplier <= 10.0
    assert all(torch.equal(a, b) for a, b in zip(delta, delta_before, strict=True))
