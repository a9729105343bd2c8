"""HypergradientLocalLR (FedHyper-CL), stepped by hand on a linear loss."""

from __future__ import annotations

import pytest
import torch

from fedhyper.rules import HypergradientLocalLR, clone_list
from tests.support.tensors import assert_tl, tl

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
