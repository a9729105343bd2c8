"""FedHyper-Auto: hand-computed steps, scale invariance, bounds, state, and real clients."""

from __future__ import annotations

import io
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity
from torch import Tensor

from clients.client_app import evaluate_global, query, train_one
from clients.slots import serve_slots
from fedhyper.checkpoint import load_checkpoint, resume_experiment
from fedhyper.compose import compose_config
from fedhyper.errors import ConfigError
from fedhyper.history import read_history
from fedhyper.methods import method_of
from fedhyper.rules import AutoLR, DescentCosine, GlobalLR, ServerRule
from fedhyper.rules.auto import DESCENT_COSINE_REPORT, GLOBAL_COSINE_REPORT
from fedhyper.training import train_local
from fedhyper.wire import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    GLOBAL_LR_KEY,
    HYPERGRADIENT_KEY,
    METRICS_RECORD,
    PREVIOUS_DELTA_RECORD,
    TrainInstruction,
    TrainReport,
)
from strategies.methods.fedhyper_auto import AutoParams
from strategies.rule_strategy import RuleStrategy
from tests.support.grid import KEYS, SAMPLING, FixedNodes, model
from tests.support.inprocess import comparable, run_in_process
from tests.support.runs import config, same_weights

ROOT_HALF = 1.0 / math.sqrt(2.0)


def vec(*values: float) -> list[Tensor]:
    return [torch.tensor(values, dtype=torch.float64)]


def server_signal(**kwargs: object) -> AutoLR:
    """The rule with the server's cosine of successive updates as its global signal."""
    settings: dict[str, object] = {"global_signal": "server"} | kwargs
    return AutoLR(**settings)  # type: ignore[arg-type]


def plain(**kwargs: object) -> AutoLR:
    """No momentum, no smoothing: each round's server cosine acts alone."""
    return server_signal(momentum=0.0, smoothing=0.0, **kwargs)


def test_log_space_steps_by_hand() -> None:
    rule = plain(global_hyper_lr=0.5, local_hyper_lr=0.5, initial_client_lr=0.01)
    rule.observe_local_signal(0.2)
    first = rule.step(vec(1.0, 0.0))
    assert (first.global_lr, first.hypergradient) == (1.0, 0.0)
    assert first.client_lr == pytest.approx(0.01 * math.exp(0.1))
    assert torch.equal(first.update[0], torch.tensor([1.0, 0.0], dtype=torch.float64))

    second = rule.step(vec(1.0, 1.0))  # cos 1/sqrt(2) with the last update; no local signal
    assert second.hypergradient == pytest.approx(ROOT_HALF)
    assert second.global_lr == pytest.approx(math.exp(0.5 * ROOT_HALF))
    assert second.client_lr == first.client_lr
    assert torch.allclose(second.update[0], second.global_lr * torch.tensor([1.0, 1.0]).double())

    third = rule.step(vec(-1.0, 0.0))  # cos -1/sqrt(2): back to 1
    assert third.global_lr == pytest.approx(1.0)


def test_momentum_and_smoothing_by_hand() -> None:
    rule = server_signal(global_hyper_lr=0.5, momentum=0.5, smoothing=0.5)
    # m = 0.5 [1, 0], bias-corrected by 1 - 0.5: the first step is the whole update.
    first = rule.step(vec(1.0, 0.0))
    assert torch.allclose(first.update[0], torch.tensor([1.0, 0.0]).double())
    # cos([0, 1], m) = 0: alpha stays; m = [0.25, 0.5], corrected by 1 - 0.25.
    second = rule.step(vec(0.0, 1.0))
    assert (second.hypergradient, second.global_lr) == (0.0, 1.0)
    assert torch.allclose(second.update[0], torch.tensor([1 / 3, 2 / 3]).double())
    # cos([1, 2], m) = 1; e = 0.5 * 0 + 0.5 * 1, corrected by 1 - 0.25 -> 2/3.
    third = rule.step(vec(1.0, 2.0))
    assert third.hypergradient == pytest.approx(2 / 3)
    assert third.global_lr == pytest.approx(math.exp(0.5 * 2 / 3))
    # m = [0.625, 1.25], corrected by 1 - 0.125.
    expected = third.global_lr * torch.tensor([0.625, 1.25]).double() / 0.875
    assert torch.allclose(third.update[0], expected)


def test_heavy_ball_momentum_by_hand() -> None:
    rule = server_signal(global_hyper_lr=0.5, momentum=0.5, smoothing=0.0, heavy_ball=True)
    # m = [1, 0], no bias correction: FedAvgM's first step.
    first = rule.step(vec(1.0, 0.0))
    assert torch.allclose(first.update[0], torch.tensor([1.0, 0.0]).double())
    # cos([1, 0], m) = 1: alpha = e^0.5; m = 0.5 [1, 0] + [1, 0] = [1.5, 0].
    second = rule.step(vec(1.0, 0.0))
    assert second.global_lr == pytest.approx(math.exp(0.5))
    assert torch.allclose(second.update[0], math.exp(0.5) * torch.tensor([1.5, 0.0]).double())
    # cos([0, 1], m) = 0: alpha stays; m = [0.75, 1].
    third = rule.step(vec(0.0, 1.0))
    assert third.global_lr == pytest.approx(math.exp(0.5))
    assert torch.allclose(third.update[0], math.exp(0.5) * torch.tensor([0.75, 1.0]).double())


def test_restart_drops_the_momentum_of_an_overshooting_step_by_hand() -> None:
    rule = server_signal(global_hyper_lr=0.5, momentum=0.5, smoothing=0.0, restart=True)
    rule.step(vec(1.0, 0.0))  # m = [0.5, 0], corrected by 1 - 0.5
    # cos([1, 1], m) = 1/sqrt(2) > 0: no restart; m = [0.75, 0.5], corrected by 1 - 0.25.
    second = rule.step(vec(1.0, 1.0))
    assert torch.allclose(second.update[0], second.global_lr * torch.tensor([1.0, 2 / 3]).double())
    # cos([-1, 0], [0.75, 0.5]) < 0: m restarts at 0.5 [-1, 0], still corrected by
    # 1 - 0.5^3 (without restart: m = [-0.125, 0.25]).
    third = rule.step(vec(-1.0, 0.0))
    cosine = -0.75 / math.hypot(0.75, 0.5)
    assert third.hypergradient == pytest.approx(cosine)
    assert third.global_lr == pytest.approx(second.global_lr * math.exp(0.5 * cosine))
    expected = third.global_lr * torch.tensor([-0.5, 0.0]).double() / 0.875
    assert torch.allclose(third.update[0], expected)
    # cos([-1, 0], m) = 1: the average refills, m = [-0.75, 0], corrected by 1 - 0.5^4.
    fourth = rule.step(vec(-1.0, 0.0))
    expected = fourth.global_lr * torch.tensor([-0.75, 0.0]).double() / 0.9375
    assert torch.allclose(fourth.update[0], expected)


def test_rms_normalised_signal_by_hand() -> None:
    rule = server_signal(global_hyper_lr=0.5, momentum=0.0, smoothing=0.5, rms_normalised=True)
    rule.step(vec(1.0, 0.0))
    # One signal, cos 1/sqrt(2): its mean over its RMS is 1, whatever its size.
    second = rule.step(vec(1.0, 1.0))
    assert second.hypergradient == pytest.approx(1.0)
    assert second.global_lr == pytest.approx(math.exp(0.5))
    # cos -1/sqrt(2): e = 0.25 c - 0.5 c = -c/4, v = 0.25 c^2 + 0.5 c^2 with c^2 = 1/2,
    # corrected by 1 - 0.25: (-c/4) / sqrt(0.375 * 0.75) = -1/3.
    third = rule.step(vec(-1.0, 0.0))
    assert third.hypergradient == pytest.approx(-1.0 / 3.0)
    assert third.global_lr == pytest.approx(math.exp(0.5 * (1.0 - 1.0 / 3.0)))


def test_rms_normalised_alpha_does_not_depend_on_the_signals_size() -> None:
    def alphas(cosines: list[float]) -> list[float]:
        rule = AutoLR(rms_normalised=True, global_hyper_lr=0.3)
        trajectory = []
        for cosine in cosines:
            rule.observe_reports({GLOBAL_COSINE_REPORT: cosine})
            trajectory.append(rule.step(vec(1.0, 0.0)).global_lr)
        return trajectory

    small = alphas([0.02, 0.01, -0.03, 0.005])
    assert small == pytest.approx(alphas([0.4, 0.2, -0.6, 0.1]))
    unnormalised = AutoLR(global_hyper_lr=0.3)
    unnormalised.observe_reports({GLOBAL_COSINE_REPORT: 0.02})
    assert unnormalised.step(vec(1.0, 0.0)).global_lr == pytest.approx(math.exp(0.3 * 0.02))
    assert small[0] == pytest.approx(math.exp(0.3))


def test_local_rms_normalised_signal_by_hand() -> None:
    rule = AutoLR(global_hyper_lr=0.0, local_hyper_lr=0.5, local_rms_normalised=True)
    rule.observe_local_signal(0.1)  # alone in its window: its sign, 1
    first = rule.step(vec(1.0, 0.0))
    assert first.client_lr == pytest.approx(0.01 * math.exp(0.5))
    rule.observe_local_signal(-0.1)  # -1/3, as the global signal's hand computation above
    assert rule.step(vec(1.0, 0.0)).client_lr == pytest.approx(0.01 * math.exp(0.5 * 2 / 3))


def test_both_signals_raise_the_client_lr_only_when_they_agree() -> None:
    rule = AutoLR(global_hyper_lr=0.0, local_hyper_lr=0.5, smoothing=0.0, local_signal="both")
    rule.observe_reports({DESCENT_COSINE_REPORT: 0.4})  # no global signal yet: local alone
    first = rule.step(vec(1.0, 0.0)).client_lr
    assert first == pytest.approx(0.01 * math.exp(0.2))
    # A global cosine of -0.01 is, alone in its window, a consistency of -1: min(0.4, -1).
    rule.observe_reports({DESCENT_COSINE_REPORT: 0.4, GLOBAL_COSINE_REPORT: -0.01})
    second = rule.step(vec(1.0, 0.0)).client_lr
    assert second == pytest.approx(first * math.exp(-0.5))
    rule.observe_reports({DESCENT_COSINE_REPORT: 0.4, GLOBAL_COSINE_REPORT: 0.02})
    assert rule.step(vec(1.0, 0.0)).client_lr == pytest.approx(second * math.exp(0.2))


def test_either_signal_raises_the_client_lr_when_one_of_them_does() -> None:
    rule = AutoLR(global_hyper_lr=0.0, local_hyper_lr=0.5, smoothing=0.0, local_signal="either")
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.2})  # no global signal yet: local alone
    first = rule.step(vec(1.0, 0.0)).client_lr
    assert first == pytest.approx(0.01 * math.exp(-0.1))
    # A plateau: the descent cosine -0.03, the global cosine 0.6: max(-0.03, 0.6).
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.6})
    second = rule.step(vec(1.0, 0.0)).client_lr
    assert second == pytest.approx(first * math.exp(0.3))
    # Both negative (an overshoot): the larger, -0.1, still lowers it.
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.1, GLOBAL_COSINE_REPORT: -0.5})
    assert rule.step(vec(1.0, 0.0)).client_lr == pytest.approx(second * math.exp(-0.05))


def _plateau_rule(**settings: Any) -> AutoLR:
    """A plateau rule with a held global LR and beta_l = 0.5."""
    return AutoLR(
        global_hyper_lr=0.0,
        local_hyper_lr=0.5,
        local_signal="plateau",
        probe_examples=8,
        **settings,
    )


def _plateau_rule_after_its_first_round(**settings: Any) -> tuple[AutoLR, float]:
    """A plateau rule (beta_l = 0.5) and the client LR its first round gave: local alone."""
    rule = _plateau_rule(**settings)
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.2})  # no global signal yet
    rule.observe_probe_losses([3.1, 3.1], [3.1, 3.1])
    first = rule.step(vec(1.0, 0.0)).client_lr
    assert first == pytest.approx(0.01 * math.exp(-0.1))
    return rule, first


def test_plateau_signal_takes_the_global_signal_only_while_the_clients_loss_is_flat() -> None:
    rule, first = _plateau_rule_after_its_first_round(smoothing=0.0)
    # A plateau (pooled loss +0.3%): max(-0.03, 0.6), as "either".
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.6})
    rule.observe_probe_losses([3.10, 3.08], [3.11, 3.09])
    assert rule.loss_flat
    second = rule.step(vec(1.0, 0.0)).client_lr
    assert second == pytest.approx(first * math.exp(0.3))
    # The clients lowered their loss by 30%: their own -0.03 alone.
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.6})
    rule.observe_probe_losses([2.0, 2.0], [1.4, 1.4])
    assert not rule.loss_flat
    assert rule.step(vec(1.0, 0.0)).client_lr == pytest.approx(second * math.exp(-0.015))
    with pytest.raises(ValueError, match="plateau"):
        AutoLR(local_signal="plateau")


def test_plateau_consistency_lifts_the_client_lr_by_the_global_signals_sign_agreement() -> None:
    rule, first = _plateau_rule_after_its_first_round(smoothing=0.5, plateau_consistency=True)
    # A plateau's small global cosines, 0.1 then 0.3 (rho = 0.5): the average
    # 0.25*0.1 + 0.5*0.3 = 0.175 over the RMS sqrt((0.25*0.01 + 0.5*0.09) * (1 - 0.25)),
    # about 0.927: near the full step, where the average itself would move it by 0.23.
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.1})
    rule.observe_probe_losses([3.10, 3.08], [3.11, 3.09])
    second = rule.step(vec(1.0, 0.0)).client_lr
    assert second == pytest.approx(first * math.exp(0.5))  # alone in its window: sign, 1
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.3})
    rule.observe_probe_losses([3.10, 3.08], [3.11, 3.09])
    third = rule.step(vec(1.0, 0.0)).client_lr
    assert third == pytest.approx(second * math.exp(0.5 * 0.175 / math.sqrt(0.0475 * 0.75)))
    # Off the plateau the descent cosine alone, as without the option.
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.3})
    rule.observe_probe_losses([2.0, 2.0], [1.4, 1.4])
    assert rule.step(vec(1.0, 0.0)).client_lr == pytest.approx(third * math.exp(-0.015))
    with pytest.raises(ValueError, match="plateau_consistency"):
        AutoLR(local_signal="either", plateau_consistency=True)


def test_plateau_tolerance_sets_how_flat_a_round_must_be() -> None:
    rule, first = _plateau_rule_after_its_first_round(smoothing=0.0, plateau_tolerance=0.02)
    # Pooled loss -3% (6.2 -> 6.014): a slow descent, not a plateau at 2%, though within
    # the loss guard's 5%: the descent cosine -0.03 alone.
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.6})
    rule.observe_probe_losses([3.1, 3.1], [3.007, 3.007])
    assert not rule.loss_flat and not rule.loss_rose
    second = rule.step(vec(1.0, 0.0)).client_lr
    assert second == pytest.approx(first * math.exp(-0.015))
    # Pooled loss -1%: a plateau, max(-0.03, 0.6).
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.6})
    rule.observe_probe_losses([3.1, 3.1], [3.069, 3.069])
    assert rule.loss_flat
    assert rule.step(vec(1.0, 0.0)).client_lr == pytest.approx(second * math.exp(0.3))
    with pytest.raises(ValueError, match="plateau_tolerance"):
        AutoLR(local_signal="plateau", probe_examples=8, plateau_tolerance=-0.01)


def test_plateau_full_step_lifts_by_beta_l_in_a_persisting_falling_plateau() -> None:
    # The first round's probe loss was flat already (3.1 -> 3.1).
    rule, first = _plateau_rule_after_its_first_round(
        smoothing=0.5, plateau_consistency=True, plateau_full_step=True
    )
    falling, rising = ([3.10, 3.08], [3.09, 3.07]), ([3.10, 3.08], [3.11, 3.09])
    # A flat round whose global cosine is -0.6 (the server overshot): no full step; the
    # consistency, -1 alone in its window, loses to the descent cosine -0.03.
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: -0.6})
    rule.observe_probe_losses(*falling)
    second = rule.step(vec(1.0, 0.0)).client_lr
    assert second == pytest.approx(first * math.exp(-0.015))
    # The plateau persists, its loss falls by 0.3% and the global cosine turns 0.1: the
    # full step 0.5, though the consistency, -0.1 / sqrt(0.095 * 0.75), is negative.
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.1})
    rule.observe_probe_losses(*falling)
    third = rule.step(vec(1.0, 0.0)).client_lr
    assert third == pytest.approx(second * math.exp(0.5))
    # Still flat, but the loss rose by 0.3%: the consistency, 0.1 / sqrt(0.0925 * 0.875).
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.3})
    rule.observe_probe_losses(*rising)
    fourth = rule.step(vec(1.0, 0.0)).client_lr
    assert fourth == pytest.approx(third * math.exp(0.5 * 0.1 / math.sqrt(0.0925 * 0.875)))
    # The clients lower their loss by 30%: their own -0.03.
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.3})
    rule.observe_probe_losses([2.0, 2.0], [1.4, 1.4])
    fifth = rule.step(vec(1.0, 0.0)).client_lr
    assert fifth == pytest.approx(fourth * math.exp(-0.015))
    # One flat round after a falling one (partial participation's noise, as likely as a
    # plateau): the consistency, average 0.25 over RMS sqrt(0.090625 * (1 - 0.5**5)).
    rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.3})
    rule.observe_probe_losses(*falling)
    consistency = 0.25 / math.sqrt(0.090625 * (1 - 0.5**5))
    assert rule.step(vec(1.0, 0.0)).client_lr == pytest.approx(fifth * math.exp(0.5 * consistency))
    with pytest.raises(ValueError, match="plateau_full_step"):
        AutoLR(local_signal="clients", plateau_full_step=True)


def test_plateau_full_step_progress_doubles_again_only_while_the_loss_falls_as_fast() -> None:
    # The first round's probe loss was flat (ratio 1.0); the global signal as is (rho 0).
    rule, first = _plateau_rule_after_its_first_round(
        smoothing=0.0, plateau_full_step=True, plateau_full_step_progress=True
    )
    # Ratios 0.99, then 0.995 (less progress than the round before), then 0.98.
    rounds = [[3.069, 3.069], [3.0845, 3.0845], [3.038, 3.038]]
    lrs = []
    for after in rounds:
        rule.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.1})
        rule.observe_probe_losses([3.1, 3.1], after)
        assert rule.loss_flat
        lrs.append(rule.step(vec(1.0, 0.0)).client_lr)
    # 0.99 <= 1.0: the full step; 0.995 > 0.99: the global signal's 0.1 instead; 0.98: full.
    assert lrs == pytest.approx(
        [first * math.exp(0.5), first * math.exp(0.55), first * math.exp(1.05)]
    )
    # The ratio is state: a restored rule compares with the round before the checkpoint.
    restored = _plateau_rule(smoothing=0.0, plateau_full_step=True, plateau_full_step_progress=True)
    restored.load_state_dict(rule.state_dict())
    for twin in (rule, restored):
        twin.observe_reports({DESCENT_COSINE_REPORT: -0.03, GLOBAL_COSINE_REPORT: 0.1})
        twin.observe_probe_losses([3.1, 3.1], [3.069, 3.069])  # 0.99 > 0.98
    assert restored.step(vec(1.0, 0.0)).client_lr == rule.step(vec(1.0, 0.0)).client_lr
    assert rule.client_lr == pytest.approx(first * math.exp(1.1))
    with pytest.raises(ValueError, match="plateau_full_step_progress"):
        AutoLR(local_signal="plateau", probe_examples=8, plateau_full_step_progress=True)


def _lift_round(rule: AutoLR, own: float, global_cosine: float | None, flat: bool) -> float:
    """One round of a plateau rule: the clients' cosines, a flat or a falling probe loss."""
    reports = {DESCENT_COSINE_REPORT: own}
    if global_cosine is not None:
        reports[GLOBAL_COSINE_REPORT] = global_cosine
    rule.observe_reports(reports)
    rule.observe_probe_losses(*(([3.1, 3.1], [3.1, 3.1]) if flat else ([2.0, 2.0], [1.4, 1.4])))
    return rule.step(vec(1.0, 0.0)).client_lr


def _peak_rule(rounds: int) -> AutoLR:
    return _plateau_rule(smoothing=0.0, plateau_peak_rounds=rounds)


def test_plateau_peak_rounds_caps_lifts_at_a_peak_the_lr_came_down_from() -> None:
    rule, uncapped = _peak_rule(2), _peak_rule(0)
    peak = 0.01 * math.exp(0.2)
    for twin in (rule, uncapped):
        assert _lift_round(twin, 0.4, None, flat=False) == pytest.approx(peak)
        # Two falling rounds below the peak (0.01 e^0.15, e^0.1): the peak becomes the ceiling.
        for exponent in (0.15, 0.1):
            lr = _lift_round(twin, -0.1, 0.9, flat=False)
            assert lr == pytest.approx(0.01 * math.exp(exponent))
    restored = _peak_rule(2)
    restored.load_state_dict(rule.state_dict())
    # A plateau: the global cosine 1.0 would lift it to 0.01 e^0.6; it stops at the peak,
    # as it does on the restored twin; without the cap it goes on.
    assert _lift_round(rule, -0.1, 1.0, flat=True) == pytest.approx(peak)
    assert _lift_round(restored, -0.1, 1.0, flat=True) == rule.client_lr
    assert _lift_round(uncapped, -0.1, 1.0, flat=True) == pytest.approx(0.01 * math.exp(0.6))
    # Back at the peak the ceiling stays: the next plateau round holds it there.
    assert _lift_round(rule, 0.0, 1.0, flat=True) == pytest.approx(peak)
    # The clients' own signal takes it past (0.01 e^0.5): the ceiling is gone, and the
    # next plateau round's lift moves it by the full 0.5.
    assert _lift_round(rule, 0.6, 0.2, flat=False) == pytest.approx(0.01 * math.exp(0.5))
    assert _lift_round(rule, 0.0, 1.0, flat=True) == pytest.approx(0.01 * math.exp(1.0))


def test_plateau_peak_rounds_leaves_a_climb_from_below_eta_0_alone() -> None:
    rule = _peak_rule(1)
    # The LR has only come down from eta_0 (0.01 e^-0.2, e^-0.3): no peak above eta_0 to
    # cap at, and the plateau's lift of 0.5 takes it above eta_0.
    assert _lift_round(rule, -0.4, None, flat=False) == pytest.approx(0.01 * math.exp(-0.2))
    assert _lift_round(rule, -0.2, 0.5, flat=False) == pytest.approx(0.01 * math.exp(-0.3))
    assert _lift_round(rule, -0.2, 1.0, flat=True) == pytest.approx(0.01 * math.exp(0.2))
    with pytest.raises(ValueError, match="plateau_peak_rounds"):
        AutoLR(local_signal="clients", plateau_peak_rounds=2)
    with pytest.raises(ValueError, match="plateau_peak_rounds"):
        _peak_rule(-1)


def test_additive_steps_by_hand() -> None:
    rule = plain(global_hyper_lr=0.5, local_hyper_lr=0.5, log_space=False, initial_client_lr=0.1)
    rule.observe_local_signal(-0.5)
    assert rule.step(vec(1.0, 0.0)).client_lr == pytest.approx(0.1 - 0.25 * 0.1)
    second = rule.step(vec(1.0, 1.0))
    assert second.global_lr == pytest.approx(1.0 + 0.5 * ROOT_HALF)


def test_the_clients_reports_carry_their_descent_cosine() -> None:
    rule = plain(local_hyper_lr=0.5, initial_client_lr=0.01)
    rule.observe_reports({DESCENT_COSINE_REPORT: 0.2, "multiplier": 3.0})
    assert rule.step(vec(1.0, 0.0)).client_lr == pytest.approx(0.01 * math.exp(0.1))
    rule.observe_reports({"multiplier": 3.0})  # no cosine came: the LR stays
    assert rule.step(vec(1.0, 0.0)).client_lr == pytest.approx(0.01 * math.exp(0.1))


def test_the_loss_guard_lowers_the_client_lr_when_the_clients_loss_rose() -> None:
    rule = plain(local_hyper_lr=0.5, initial_client_lr=0.01, probe_examples=8)
    assert rule.probe_examples == 8 and AutoLR().probe_examples == 0
    rule.observe_reports({DESCENT_COSINE_REPORT: 0.2})
    rule.observe_probe_losses([2.0, 2.0], [1.5, 1.6])
    assert not rule.loss_rose
    assert rule.step(vec(1.0, 0.0)).client_lr == pytest.approx(0.01 * math.exp(0.1))
    # Both clients' loss rose: the cosine says up, the guard says down by beta_l.
    rule.observe_reports({DESCENT_COSINE_REPORT: 0.2})
    rule.observe_probe_losses([2.0, 2.0], [4.0, 8.0])
    assert rule.loss_rose
    assert rule.step(vec(1.0, 0.0)).client_lr == pytest.approx(0.01 * math.exp(0.1 - 0.5))
    # No probe came back: counted as risen.
    rule.observe_reports({DESCENT_COSINE_REPORT: 0.2})
    assert rule.step(vec(1.0, 0.0)).client_lr == pytest.approx(0.01 * math.exp(0.1 - 1.0))
    unguarded = plain(local_hyper_lr=0.5, initial_client_lr=0.01)
    unguarded.observe_reports({DESCENT_COSINE_REPORT: 0.2})
    unguarded.observe_probe_losses([1.0], [9.0])
    assert not unguarded.loss_rose
    assert unguarded.step(vec(1.0, 0.0)).client_lr == pytest.approx(0.01 * math.exp(0.1))
    with pytest.raises(ValueError, match="probe_examples"):
        AutoLR(probe_examples=-1)
    with pytest.raises(ValueError, match="guard_tolerance"):
        AutoLR(guard_tolerance=-0.5)


def test_the_loss_guard_lets_a_plateau_pass_within_its_tolerance() -> None:
    """A pooled loss up 0.2% is a plateau's noise at the default, a rise at 0."""
    plateau = ([3.10, 3.08, 3.11, 3.09], [3.11, 3.09, 3.12, 3.09])
    lrs = []
    for tolerance in (0.05, 0.0):
        rule = plain(local_hyper_lr=0.5, probe_examples=8, guard_tolerance=tolerance)
        rule.observe_reports({DESCENT_COSINE_REPORT: 0.2})
        rule.observe_probe_losses(*plateau)
        lrs.append(rule.step(vec(1.0, 0.0)).client_lr)
    assert lrs == pytest.approx([0.01 * math.exp(0.1), 0.01 * math.exp(-0.5)])


def test_the_global_guard_reads_a_step_that_went_uphill_as_a_cosine_of_minus_one() -> None:
    """The clients' cosine says "keep going"; their loss rose since w_{t-1}: s_t = -1."""
    rule = server_signal(
        global_hyper_lr=0.5,
        local_hyper_lr=0.0,
        momentum=0.5,
        smoothing=0.0,
        heavy_ball=True,
        restart=True,
        global_signal="clients",
        probe_examples=8,
        global_guard=True,
    )
    assert rule.sends_applied_step
    # Round 1: no previous model anywhere (NaN): no guard; m = [1, 0].
    rule.observe_probe_losses([2.0, 2.0], [1.9, 1.9], [math.nan, math.nan])
    assert not rule.step_went_uphill
    rule.step(vec(1.0, 0.0))
    # Round 2: cosine 1 and the loss fell 2.0 -> 1.8: alpha = e^0.5; m = [1.5, 0].
    rule.observe_reports({GLOBAL_COSINE_REPORT: 1.0})
    rule.observe_probe_losses([1.8, 1.8], [1.7, 1.7], [2.0, 2.0])
    second = rule.step(vec(1.0, 0.0))
    assert second.global_lr == pytest.approx(math.exp(0.5))
    # Round 3: cosine 1 again, but the pooled loss rose 3.6 -> 4.2 (> 5%): s = -1, alpha
    # back to 1, and the restart drops m before it takes Delta: m = [1, 0].
    rule.observe_reports({GLOBAL_COSINE_REPORT: 1.0})
    rule.observe_probe_losses([2.2, 2.0], [2.1, 1.9], [1.8, 1.8])
    assert rule.step_went_uphill
    third = rule.step(vec(1.0, 0.0))
    assert (third.hypergradient, third.global_lr) == (-1.0, pytest.approx(1.0))
    assert torch.allclose(third.update[0], torch.tensor([1.0, 0.0]).double())
    # Within the tolerance (1.8 -> 1.85, +2.8%) the cosine decides.
    rule.observe_reports({GLOBAL_COSINE_REPORT: 1.0})
    rule.observe_probe_losses([1.85], [1.8], [1.8])
    assert not rule.step_went_uphill
    assert rule.step(vec(1.0, 0.0)).global_lr == pytest.approx(math.exp(0.5))
    # Off by default: the same rise leaves the cosine alone.
    unguarded = server_signal(global_signal="clients", probe_examples=8)
    assert rule.probes_previous_model and not unguarded.probes_previous_model
    unguarded.observe_probe_losses([2.2], [2.1], [1.8])
    assert not unguarded.step_went_uphill
    with pytest.raises(ValueError, match="global_guard"):
        AutoLR(global_guard=True)


def test_a_round_whose_clients_diverged_steps_no_further_than_their_average() -> None:
    rule = server_signal(
        global_hyper_lr=0.5,
        local_hyper_lr=0.7,
        momentum=0.5,
        smoothing=0.0,
        heavy_ball=True,
        initial_lr=2.0,
        probe_examples=8,
        divergence_ratio=2.0,
    )
    # Round 1: the pooled loss went 4.0 -> 8.4 (2.1x): the step is the average, not
    # alpha = 2 times it; m = [1, 0]; the client LR down by the guard's e^-0.7, whatever
    # the clients' cosine said.
    rule.observe_local_signal(1.0)
    rule.observe_probe_losses([2.0, 2.0], [6.0, 2.4])
    assert rule.clients_diverged
    first = rule.step(vec(1.0, 0.0))
    assert first.clients_diverged and first.global_lr == 2.0
    assert torch.equal(first.update[0], torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert first.client_lr == pytest.approx(0.01 * math.exp(-0.7))
    # Round 2 (the loss fell): cos([1, 1], m) moves alpha, m = 0.5 [1, 0] + [1, 1].
    rule.observe_probe_losses([2.0, 2.0], [1.5, 1.5])
    second = rule.step(vec(1.0, 1.0))
    alpha = 2.0 * math.exp(0.5 * ROOT_HALF)
    assert not second.clients_diverged and second.global_lr == pytest.approx(alpha)
    assert torch.allclose(second.update[0], alpha * torch.tensor([1.5, 1.0]).double())
    # Round 3, a client's loss overflowed: alpha still follows its signal, but the step
    # is min(alpha, 1) Delta = Delta, and m restarts from Delta.
    rule.observe_probe_losses([1.0], [math.inf])
    third = rule.step(vec(0.0, 3.0))
    assert third.clients_diverged
    assert torch.allclose(third.update[0], torch.tensor([0.0, 3.0]).double())
    assert torch.allclose(rule.state_dict()["direction"][0], torch.tensor([0.0, 3.0]).double())
    # With the averaged momentum too the capped step is Delta itself, not (1 - mu) Delta.
    averaged = server_signal(initial_lr=2.0, momentum=0.5, probe_examples=8, divergence_ratio=2)
    averaged.observe_probe_losses([2.0, 2.0], [6.0, 2.4])
    assert torch.allclose(averaged.step(vec(1.0, 0.0)).update[0], vec(1.0, 0.0)[0])
    # 2.1x is no divergence at a limit of 2.5, nor with the cap off.
    for limit in (2.5, 0.0):
        other = server_signal(initial_lr=2.0, probe_examples=8, divergence_ratio=limit)
        other.observe_probe_losses([2.0, 2.0], [6.0, 2.4])
        assert torch.allclose(other.step(vec(1.0, 0.0)).update[0], vec(2.0, 0.0)[0])
    with pytest.raises(ValueError, match="divergence_ratio"):
        AutoLR(divergence_ratio=2.0)
    with pytest.raises(ValueError, match="at least 1"):
        AutoLR(probe_examples=8, divergence_ratio=0.5)


def test_the_strategy_asks_for_probes_and_passes_each_clients_on() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    rule = plain(local_hyper_lr=0.5, initial_client_lr=0.01, probe_examples=8)
    strategy = RuleStrategy(rule, KEYS, **SAMPLING)
    # Each client's probe counts once, whatever its weight: pooled 3.0 -> 3.9, although
    # weighted 1:30 the mean loss would fall (1.97 -> 1.90).
    replies = [
        _reply([1.0, 3.0], 1, {DESCENT_COSINE_REPORT: 0.2}, probe=(1.0, 2.0)),
        _reply([1.0, 3.0], 30, {DESCENT_COSINE_REPORT: 0.2}, probe=(2.0, 1.9)),
    ]
    _, _, messages = _round(strategy, 1, model([0.0, 0.0]), replies)
    sent = TrainInstruction.from_record(messages[0].content.config_records[CONFIG_RECORD])
    assert sent.probe_examples == 8 and sent.lr == 0.01
    # The server's cosine needs no applied step, so the clients probe no previous model.
    assert not sent.probe_previous
    assert strategy.client_lr == pytest.approx(0.01 * math.exp(-0.5))


def _reply(
    weights: list[float],
    examples: int,
    report: dict[str, float],
    probe: tuple[float, float] | None = None,
) -> Message:
    train_report = TrainReport.from_lrs(examples, 0.0, [0.01], report)
    if probe is not None:
        train_report = replace(train_report, probe_loss_before=probe[0], probe_loss_after=probe[1])
    record = train_report.to_record()
    content = RecordDict({ARRAYS_RECORD: model(weights), METRICS_RECORD: MetricRecord(record)})
    return Message(content=content, dst_node_id=0, message_type=MessageType.TRAIN)


def _round(
    strategy: RuleStrategy, server_round: int, current: ArrayRecord, replies: list[Message]
) -> tuple[ArrayRecord, MetricRecord, list[Message]]:
    instruction = TrainInstruction.from_experiment(compose_config([]), server_round, 0)
    record = ConfigRecord(instruction.to_record())
    messages = list(strategy.configure_train(server_round, current, record, FixedNodes(2)))
    new, metrics = strategy.aggregate_train(server_round, replies)
    assert new is not None and metrics is not None
    return new, metrics, messages


def test_the_clients_global_cosine_drives_alpha_against_the_applied_step() -> None:
    # Messages carry their sender; set it as Flower's in-process simulation does.
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    rule = plain(global_hyper_lr=0.5, local_hyper_lr=0.0, global_signal="clients")
    assert rule.sends_applied_step and AutoLR().sends_applied_step
    assert not plain().sends_applied_step
    strategy = RuleStrategy(rule, KEYS, **SAMPLING)
    # Round 1: no step applied yet, no global cosine: alpha 1, w_1 = [1, 3].
    first = [_reply([1.0, 3.0], 1, {DESCENT_COSINE_REPORT: 0.0}) for _ in range(2)]
    w1, metrics, messages = _round(strategy, 1, model([0.0, 0.0]), first)
    assert PREVIOUS_DELTA_RECORD not in messages[0].content
    assert (metrics[GLOBAL_LR_KEY], metrics[HYPERGRADIENT_KEY]) == (1.0, 0.0)
    # Round 2: the clients get d_1 = [1, 3] and report 0.4 (1 example) and 0.8 (3): the
    # weighted mean 0.7 moves alpha, not cos(delta_2, delta_1) = cos([1, 0], [1, 3]).
    second = [
        _reply([2.0, 3.0], 1, {DESCENT_COSINE_REPORT: 0.0, GLOBAL_COSINE_REPORT: 0.4}),
        _reply([2.0, 3.0], 3, {DESCENT_COSINE_REPORT: 0.0, GLOBAL_COSINE_REPORT: 0.8}),
    ]
    w2, metrics, messages = _round(strategy, 2, w1, second)
    sent = messages[0].content.array_records[PREVIOUS_DELTA_RECORD]
    np.testing.assert_allclose(sent["w"].numpy(), [1.0, 3.0])
    alpha = math.exp(0.5 * 0.7)
    assert metrics[HYPERGRADIENT_KEY] == pytest.approx(0.7)
    assert metrics[GLOBAL_LR_KEY] == pytest.approx(alpha)
    np.testing.assert_allclose(w2["w"].numpy(), [1.0 + alpha, 3.0], rtol=1e-6)
    # Round 3 sends the step applied in round 2, alpha [1, 0], not the update [1, 0].
    _, _, messages = _round(strategy, 3, w2, second)
    sent = messages[0].content.array_records[PREVIOUS_DELTA_RECORD]
    np.testing.assert_allclose(sent["w"].numpy(), [alpha, 0.0], rtol=1e-6)


def test_server_signal_drives_the_client_lr() -> None:
    rule = plain(local_hyper_lr=1.0, local_signal="server", initial_client_lr=0.01)
    rule.observe_local_signal(1.0)  # not used
    assert rule.step(vec(1.0, 0.0)).client_lr == 0.01
    assert rule.step(vec(1.0, 1.0)).client_lr == pytest.approx(0.01 * math.exp(ROOT_HALF))


def test_off_switches_keep_both_lrs() -> None:
    rule = plain(global_hyper_lr=0.0, local_hyper_lr=0.0)
    for delta in (vec(1.0, 0.0), vec(1.0, 1.0), vec(2.0, 2.0)):
        rule.observe_local_signal(0.9)
        step = rule.step(delta)
        assert (step.global_lr, step.client_lr) == (1.0, 0.01)
        assert torch.equal(step.update[0], delta[0])


def test_bounds_hold_and_non_finite_signals_do_not_move() -> None:
    rule = plain(global_hyper_lr=5.0, local_hyper_lr=5.0, initial_client_lr=1.0)
    for _ in range(5):  # the same direction every round: cos 1, a big step each time
        rule.observe_local_signal(1.0)
        step = rule.step(vec(1.0, 1.0))
    assert (step.global_lr, step.client_lr) == (10.0, 100.0)
    for bad in (math.nan, math.inf, -math.inf):
        rule.observe_local_signal(bad)
        step = rule.step(vec(math.nan, 1.0))  # NaN cosine
        assert (step.global_lr, step.client_lr) == (10.0, 100.0)
        assert step.hypergradient == 0.0

    rule = plain(global_hyper_lr=5.0, local_hyper_lr=5.0, initial_client_lr=1.0)
    for sign in (1.0, -1.0, 1.0, -1.0, 1.0, -1.0):  # opposite updates: cos -1
        rule.observe_local_signal(-5.0)  # clipped to -1
        step = rule.step(vec(sign, sign))
    assert (step.global_lr, step.client_lr) == (0.1, 0.01)


def test_invalid_settings_are_rejected() -> None:
    for kwargs in (
        {"initial_lr": 20.0},
        {"momentum": 1.0},
        {"smoothing": -0.1},
        {"local_signal": "neither"},
        {"global_signal": "both"},
        {"lr_bounds": (0.0, 1.0)},
        {"initial_client_lr": 0.0},
    ):
        with pytest.raises(ValueError):
            AutoLR(**kwargs)  # type: ignore[arg-type]


def _trajectory(rule: ServerRule, deltas: list[list[Tensor]]) -> list[tuple[float, float | None]]:
    steps = [rule.step(delta) for delta in deltas]
    return [(step.global_lr, step.client_lr) for step in steps]


def _deltas(rounds: int = 8) -> list[list[Tensor]]:
    generator = torch.Generator().manual_seed(3)
    drift = torch.randn(5, 4, generator=generator)
    # A steady direction plus noise: successive cosines are mostly positive, sometimes not.
    return [[drift + 1.5 * torch.randn(5, 4, generator=generator)] for _ in range(rounds)]


def test_scale_invariance_of_auto_and_not_of_the_reference() -> None:
    deltas = _deltas()
    scaled = [[1000.0 * d for d in delta] for delta in deltas]
    tiled = [[d.tile(10, 10) for d in delta] for delta in deltas]  # 100x the parameters
    reference = _trajectory(server_signal(), deltas)
    assert len({alpha for alpha, _ in reference}) > 3, "alpha must move for the test to bite"
    for variant in (scaled, tiled):
        trajectory = _trajectory(server_signal(), variant)
        for (alpha, _), (expected, _) in zip(trajectory, reference, strict=True):
            assert alpha == pytest.approx(expected, rel=1e-6)  # float32 rounding
    # The reference rule's inner product grows with both: its trajectory changes.
    baseline = _trajectory(GlobalLR(hyper_lr=1e-3), deltas)
    for variant in (scaled, tiled):
        changed = _trajectory(GlobalLR(hyper_lr=1e-3), variant)
        assert max(abs(a - b) for (a, _), (b, _) in zip(changed, baseline, strict=True)) > 0.1


def test_state_round_trip_gives_identical_future_steps() -> None:
    deltas = _deltas(4)
    original = server_signal()
    for delta in deltas[:3]:
        original.observe_local_signal(0.3)
        original.step(delta)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    original.observe_local_signal(0.3)
    expected = original.step(deltas[3])
    buffer.seek(0)
    restored = server_signal()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    restored.observe_local_signal(0.3)
    step = restored.step(deltas[3])
    assert (step.global_lr, step.client_lr, step.hypergradient) == (
        expected.global_lr,
        expected.client_lr,
        expected.hypergradient,
    )
    assert torch.equal(step.update[0], expected.update[0])
    fresh = server_signal()
    fresh.observe_local_signal(0.3)
    assert fresh.step(deltas[3]).global_lr != expected.global_lr
    with pytest.raises(KeyError, match="direction"):
        AutoLR().load_state_dict({"alpha": 1.0})


# --------------------------------------------------------------------------- clients


def _sgd_steps(meter: DescentCosine, weight: Tensor, *gradients: list[float]) -> None:
    """Step ``weight`` by plain SGD at LR 1 along ``gradients``, as the training loop does."""
    optimizer = torch.optim.SGD([weight], lr=1.0)
    for gradient in gradients:
        weight.grad = torch.tensor(gradient)
        meter.before_step()
        optimizer.step()
        meter.after_step()


def test_descent_cosine_by_hand() -> None:
    weight = torch.zeros(2, requires_grad=True)
    meter = DescentCosine([weight], horizon="step")
    # Gradients g1 = [1, 0], g2 = [1, 1], g3 = [-1, 1]; SGD steps s_k = -g_k.
    # cos(-g2, s1) = 1/sqrt(2), cos(-g3, s2) = cos([1, -1], [-1, -1]) = 0.
    _sgd_steps(meter, weight, [1.0, 0.0], [1.0, 1.0], [-1.0, 1.0])
    assert meter.count == 2
    assert meter.mean == pytest.approx(ROOT_HALF / 2)
    assert meter.report() == {DESCENT_COSINE_REPORT: pytest.approx(ROOT_HALF / 2)}
    assert meter.global_cosine is None


def test_round_horizon_by_hand() -> None:
    """Each gradient against the displacement from theta_0, not against the last step."""
    weight = torch.zeros(2, requires_grad=True)
    meter = DescentCosine([weight], horizon="round")
    # Same gradients as above: theta_1 = [-1, 0], theta_2 = [-2, -1].
    # cos(-g2, theta_1) = cos([-1, -1], [-1, 0]) = 1/sqrt(2);
    # cos(-g3, theta_2) = cos([1, -1], [-2, -1]) = -1/sqrt(10) (the step horizon says 0).
    _sgd_steps(meter, weight, [1.0, 0.0], [1.0, 1.0], [-1.0, 1.0])
    assert meter.count == 2
    assert meter.mean == pytest.approx((ROOT_HALF - 10**-0.5) / 2)
    with pytest.raises(ValueError, match="horizon"):
        DescentCosine([weight], horizon="epoch")


def test_the_global_cosine_by_hand() -> None:
    """cos(-g_1, d) on the first step only: g_1 = [1, 0], d = [1, 1] -> -1/sqrt(2)."""
    weight = torch.zeros(2, requires_grad=True)
    meter = DescentCosine([weight], [torch.tensor([1.0, 1.0])], "step", "step")
    # s_1 = -g_1 = [-1, 0]; g_2 = [1, -1] gives the descent cosine cos([-1, 1], s_1).
    _sgd_steps(meter, weight, [1.0, 0.0], [1.0, -1.0])
    assert meter.global_cosine == pytest.approx(-ROOT_HALF)
    assert meter.report() == {
        DESCENT_COSINE_REPORT: pytest.approx(ROOT_HALF),
        GLOBAL_COSINE_REPORT: pytest.approx(-ROOT_HALF),
    }
    with pytest.raises(ValueError, match="shapes"):
        DescentCosine([weight], [torch.zeros(3)])


def test_the_global_cosine_over_the_round_by_hand() -> None:
    """cos(-(g_1 + g_2), d): g_1 + g_2 = [2, -1], d = [1, 1] -> -1/sqrt(10)."""
    weight = torch.zeros(2, requires_grad=True)
    meter = DescentCosine([weight], [torch.tensor([1.0, 1.0])], global_horizon="round")
    assert meter.global_cosine is None
    _sgd_steps(meter, weight, [1.0, 0.0], [1.0, -1.0])
    assert meter.report()[GLOBAL_COSINE_REPORT] == pytest.approx(-(10**-0.5))
    with pytest.raises(ValueError, match="global_horizon"):
        DescentCosine([weight], global_horizon="epoch")


@pytest.mark.parametrize("horizon", ["step", "round"])
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_descent_cosine_says_too_small_or_too_large(optimizer_name: str, horizon: str) -> None:
    """On one full batch, a tiny LR keeps descending (cos > 0); a huge one overshoots.

    Random labels give the loss a finite minimum: on separable data the gradient keeps
    its direction at any LR (the margin grows forever) and nothing can overshoot.
    """
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 5, generator=generator)
    targets = torch.randint(0, 2, (64,), generator=generator)
    means = {}
    for lr in (1e-4, 50.0):
        model = torch.nn.Linear(5, 2)
        torch.nn.init.zeros_(model.weight)
        torch.nn.init.zeros_(model.bias)
        params = list(model.parameters())
        optimizer = (
            torch.optim.SGD(params, lr=lr)
            if optimizer_name == "sgd"
            else torch.optim.Adam(params, lr=lr / 10)
        )
        meter = DescentCosine(params, horizon=horizon)
        train_local(
            model,
            [(inputs, targets)] * 20,
            optimizer,
            epochs=1,
            device=torch.device("cpu"),
            controller=meter,
        )
        means[lr] = meter.mean
    assert means[1e-4] > 0.5
    assert means[50.0] < -0.2


@pytest.mark.parametrize("local_signal", ["server", "clients"])
def test_clients_train_with_the_lr_fedhyper_auto_schedules(
    tmp_path: Path, local_signal: str
) -> None:
    cfg = config(
        "strategy=fedhyper_auto",
        "num_rounds=3",
        "client.lr=0.001",
        f"strategy.local_signal={local_signal}",
    )
    run_in_process(cfg, tmp_path)
    history = read_history(tmp_path)
    assert history[0]["scheduled_client_lr"] == 0.001
    for row in history:
        assert row["client_lr_min"] == row["client_lr_max"] == row["scheduled_client_lr"]
    # LR 0.001 with 2 local steps is far too small: either signal pushes it up (the
    # global one from round 2, when the clients first have a server step to compare).
    assert history[-1]["scheduled_client_lr"] > 0.001


def test_the_loss_guard_reaches_the_clients_and_brakes_a_huge_lr(tmp_path: Path) -> None:
    """At LR 5 the tiny CNN's loss on its own rows rises: the guard lowers the LR by β_l."""
    cfg = config(
        "strategy=fedhyper_auto",
        "num_rounds=3",
        "client.lr=5.0",
        "strategy.probe_examples=16",
        "client.rule.horizon=round",
        "client.rule.global_horizon=round",
    )
    run_in_process(cfg, tmp_path)
    history = read_history(tmp_path)
    lrs = [row["scheduled_client_lr"] for row in history]
    assert lrs[0] == 5.0
    assert isinstance(cfg.strategy, AutoParams)
    assert lrs[1] == pytest.approx(5.0 * math.exp(-cfg.strategy.local_hyper_lr))
    # The history shows what the guard read: a pooled rise beyond its tolerance.
    assert history[0]["probe_loss_ratio"] > 1.0 + cfg.strategy.guard_tolerance


def test_a_diverged_round_steps_as_fedavg_whatever_alpha(tmp_path: Path) -> None:
    """At LR 1 the tiny CNN's clients diverge (their loss grows ~10^4 x): α_0 = 2 steps as 1."""
    runs = {
        "capped": ("strategy.global_lr=2",),
        "fedavg-step": ("strategy.global_lr=1",),
        "uncapped": ("strategy.global_lr=2", "strategy.divergence_ratio=0"),
    }
    for name, overrides in runs.items():
        cfg = config("strategy=fedhyper_auto", "num_rounds=1", "client.lr=1.0", *overrides)
        run_in_process(cfg, tmp_path / name)
    [row] = read_history(tmp_path / "capped")
    assert row["probe_loss_ratio"] > 2.0 and row["clients_diverged"]
    assert not read_history(tmp_path / "uncapped")[0]["clients_diverged"]
    assert same_weights(tmp_path / "capped", tmp_path / "fedavg-step")
    assert not same_weights(tmp_path / "capped", tmp_path / "uncapped")


def test_the_clients_probe_the_previous_global_model(tmp_path: Path) -> None:
    """Each client's loss on w_t - d_{t-1} is its loss on w_{t-1}, measured a round before.

    Two clients train in every round, so each one's before-training probe of round t-1
    is on the same rows of the same model as its previous-model probe of round t.
    """
    probes: dict[tuple[int, int], TrainReport] = {}

    def recording_train_one(content: RecordDict, context: Context) -> RecordDict:
        reply = train_one(content, context)
        instruction = TrainInstruction.from_record(content.config_records[CONFIG_RECORD])
        assert instruction.probe_previous and instruction.partition is not None
        report = TrainReport.from_record(reply.metric_records[METRICS_RECORD])
        probes[instruction.server_round, instruction.partition] = report
        return reply

    app = ClientApp()
    app.train()(lambda message, context: serve_slots(message, context, recording_train_one))
    app.evaluate()(evaluate_global)
    app.query()(query)
    cfg = config(
        "strategy=fedhyper_auto",
        "num_rounds=3",
        "strategy.global_guard=true",
        "strategy.probe_examples=16",
        "partition.num_clients=2",
    )
    run_in_process(cfg, tmp_path, app)
    assert {key[1] for key in probes} == {0, 1}
    for (server_round, partition), report in probes.items():
        if server_round == 1:
            assert report.probe_loss_previous is None
            continue
        earlier = probes[server_round - 1, partition].probe_loss_before
        assert report.probe_loss_previous == pytest.approx(earlier, rel=1e-5)
    history = read_history(tmp_path)
    assert math.isnan(history[0]["step_loss_ratio"])
    for row, server_round in zip(history[1:], (2, 3), strict=True):
        now = sum(probes[server_round, i].probe_loss_before or 0.0 for i in (0, 1))
        then = sum(probes[server_round, i].probe_loss_previous or 0.0 for i in (0, 1))
        assert row["step_loss_ratio"] == pytest.approx(now / then)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(["strategy.global_signal=server"], id="server-signal"),
        pytest.param(["strategy.global_signal=clients"], id="clients-signal"),
        # The global guard's clients rebuild w_{t-1} from state the checkpoint must keep.
        pytest.param(["strategy.global_guard=true"], id="global-guard"),
    ],
)
def test_fedhyper_auto_resumes_exactly(tmp_path: Path, extra: list[str]) -> None:
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    overrides = ("strategy=fedhyper_auto", *extra)
    run_in_process(config(*overrides, "num_rounds=3"), straight)
    run_in_process(config(*overrides, "num_rounds=2"), interrupted)
    assert load_checkpoint(interrupted).server_round == 2
    resumed = resume_experiment(
        compose_config([f"resume={interrupted}", "num_rounds=3"]), ["resume", "num_rounds"]
    )
    run_in_process(resumed, interrupted)
    assert same_weights(straight, interrupted)
    history = read_history(interrupted)
    assert comparable(history) == comparable(read_history(straight))
    # From round 2 on, the global LR follows a signal in either mode.
    assert history[0]["global_lr"] == 1.0 and history[2]["global_lr"] != 1.0


@pytest.mark.parametrize(
    ("overrides", "expected", "by_consistency"),
    [
        (["client=sgd"], "plateau", True),
        (
            ["client=sgd", "strategy.probe_examples=0", "strategy.divergence_ratio=0"],
            "clients",
            False,
        ),
        (["client=sgd", "strategy.plateau_consistency=false"], "plateau", False),
        (["client=adam"], "server", False),
        (["client=sgd", "strategy.local_signal=server"], "server", False),
        (["client=adam", "strategy.local_signal=clients"], "clients", False),
        (["client=adam", "strategy.local_signal=plateau"], "plateau", True),
    ],
)
def test_the_client_lr_signal_follows_the_clients_optimiser(
    overrides: list[str], expected: str, by_consistency: bool
) -> None:
    config = compose_config(
        ["strategy=fedhyper_auto", "strategy.plateau_peak_rounds=4", *overrides]
    )
    server_rule = method_of(config).server_rule
    assert server_rule is not None
    rule = server_rule(config, config.strategy)
    assert isinstance(rule, AutoLR) and rule.local_signal == expected
    # The plateau's lift settings are read only where the plateau test runs.
    assert rule.plateau_consistency is by_consistency
    assert rule.plateau_full_step is (expected == "plateau")
    assert rule.plateau_peak_rounds == (4 if expected == "plateau" else 0)
    # One noise band: a round is flat, risen or falling by the same test.
    assert rule.plateau_tolerance == rule.guard_tolerance == 0.05


@pytest.mark.parametrize(
    ("overrides", "key", "allowed"),
    [
        (["strategy=fedhyper_auto", "client_rule=constant"], "client_rule", "descent_cosine"),
        (["strategy=fedhyper_auto", "strategy.local_signal=neither"], "local_signal", "server"),
        (["strategy=fedhyper_auto", "strategy.global_signal=both"], "global_signal", "clients"),
        (["strategy=fedhyper_auto", "strategy.signal_smoothing=1"], "signal_smoothing", "[0"),
        (["strategy=fedhyper_auto", "strategy.local_hyper_lr=-1"], "local_hyper_lr", ">= 0"),
        (["strategy=fedhyper_auto", "strategy.global_lr=20"], "global_lr", "3]"),
        (["strategy=fedhyper_auto", "strategy.local_lr_max_factor=0.5"], "max_factor", ">= 1"),
        (["strategy=fedhyper_auto", "strategy.plateau_peak_rounds=-1"], "peak_rounds", ">= 0"),
        (
            ["strategy=fedhyper_auto", "strategy.global_guard=true", "strategy.probe_examples=0"],
            "probe_examples",
            ">= 1 with global_guard",
        ),
        (
            [
                "strategy=fedhyper_auto",
                "strategy.local_signal=plateau",
                "strategy.probe_examples=0",
                "strategy.divergence_ratio=0",
            ],
            "probe_examples",
            ">= 1 with local_signal=plateau",
        ),
        (
            ["strategy=fedhyper_auto", "strategy.divergence_ratio=0.5"],
            "divergence_ratio",
            "0 (off)",
        ),
        (
            ["strategy=fedhyper_auto", "strategy.probe_examples=0"],
            "probe_examples",
            ">= 1 with divergence_ratio",
        ),
    ],
)
def test_bad_fedhyper_auto_settings_are_named(overrides: list[str], key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as error:
        compose_config(overrides)
    assert key in str(error.value) and allowed in str(error.value)
