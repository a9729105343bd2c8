from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedhyper.errors import ConfigError
from fedhyper.training import (
    StepController,
    evaluate,
    flush_denormals,
    loss_before_step,
    make_optimizer,
    pick_device,
    set_seed,
    train_local,
)

CPU = torch.device("cpu")


class OneParam(nn.Module):
    """Logits ``(w * x, 0)``: with target 0 the per-example gradient is ``-x * sigmoid(-w x)``."""

    def __init__(self, w0: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.w * x, torch.zeros_like(x)], dim=1)


def one_param_grad(w: float, xs: list[float]) -> float:
    return sum(-x / (1.0 + math.exp(w * x)) for x in xs) / len(xs)


class Recorder:
    """Records hook calls; optionally halves every group's lr after each step."""

    def __init__(self, optimizer: torch.optim.Optimizer, halve: bool = False) -> None:
        self.optimizer = optimizer
        self.halve = halve
        self.events: list[str] = []

    def start_epoch(self) -> None:
        self.events.append("epoch")

    def before_step(self) -> None:
        self.events.append("before")

    def after_step(self) -> None:
        self.events.append("after")
        if self.halve:
            for group in self.optimizer.param_groups:
                group["lr"] *= 0.5


def counting_loader(n: int, batch_size: int) -> DataLoader[tuple[torch.Tensor, ...]]:
    x = torch.linspace(-1.0, 1.0, n)
    return DataLoader(TensorDataset(x, torch.zeros(n, dtype=torch.int64)), batch_size=batch_size)


def test_train_local_reduces_loss_on_linear_problem() -> None:
    set_seed(0)
    x = torch.randn(128, 2)
    y = (x[:, 0] + x[:, 1] > 0).long()
    dataset = TensorDataset(x, y)
    loader = DataLoader(dataset, batch_size=16, shuffle=True)
    model = nn.Linear(2, 2)
    before = evaluate(model, dataset, device=CPU)
    optimizer = make_optimizer("sgd", model.parameters(), lr=0.5, momentum=0.0, weight_decay=0.0)

    result = train_local(model, loader, optimizer, epochs=5, device=CPU)

    after = evaluate(model, dataset, device=CPU)
    assert after.loss < 0.5 * before.loss
    assert after.accuracy > 0.9
    assert result.steps == 5 * 8 and result.lrs == [0.5] * 40
    assert result.num_examples == 5 * 128
    assert math.isfinite(result.mean_loss) and model.training


def test_sgd_step_is_minus_lr_times_grad() -> None:
    model = OneParam(0.0)
    xs = [1.0, 2.0]
    loader = DataLoader(TensorDataset(torch.tensor(xs), torch.zeros(2, dtype=torch.int64)), 2)
    # The first momentum step equals plain SGD because the buffer starts at the gradient.
    optimizer = make_optimizer("sgd", model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.0)

    result = train_local(model, loader, optimizer, epochs=1, device=CPU)

    # sigmoid(0) = 1/2, so the gradient is mean(-1/2, -2/2) = -0.75 exactly.
    assert model.w.grad is not None and model.w.grad.item() == -0.75
    assert model.w.item() == pytest.approx(0.0 - 0.1 * -0.75, abs=1e-8)
    assert result.steps == 1 and result.lrs == [0.1]
    assert result.mean_loss == pytest.approx(math.log(2.0))


def test_controller_lr_changes_apply_to_next_step() -> None:
    w0, lr0 = 0.3, 0.4
    xs = [0.5, -1.0, 2.0, 1.5, -0.25, 1.0]
    model = OneParam(w0)
    loader = DataLoader(TensorDataset(torch.tensor(xs), torch.zeros(6, dtype=torch.int64)), 2)
    optimizer = make_optimizer("sgd", model.parameters(), lr=lr0, momentum=0.0, weight_decay=0.0)
    controller = Recorder(optimizer, halve=True)

    result = train_local(model, loader, optimizer, epochs=2, device=CPU, controller=controller)

    assert result.lrs == [lr0 * 0.5**k for k in range(6)]
    w = w0
    for lr, start in zip(result.lrs, [0, 2, 4] * 2, strict=True):
        w -= lr * one_param_grad(w, xs[start : start + 2])
    assert model.w.item() == pytest.approx(w, abs=1e-6)
    assert optimizer.param_groups[0]["lr"] == lr0 * 0.5**6


def test_hooks_order_and_start_epoch_once_per_epoch() -> None:
    model = OneParam(0.0)
    optimizer = make_optimizer("sgd", model.parameters(), lr=0.1, momentum=0.0, weight_decay=0.0)
    controller = Recorder(optimizer)
    typed: StepController = controller  # Recorder satisfies the protocol structurally

    train_local(model, counting_loader(6, 3), optimizer, epochs=3, device=CPU, controller=typed)

    assert controller.events == ["epoch", "before", "after", "before", "after"] * 3


@pytest.mark.parametrize(
    ("max_steps", "steps", "epochs_started", "examples"),
    [
        (2, 2, 1, 6),  # stops mid-epoch
        (4, 4, 1, 10),  # ends exactly on an epoch boundary: no empty epoch is started
        (6, 6, 2, 16),  # spans epochs
        (0, 12, 3, 30),  # no cap
    ],
)
def test_max_steps_caps_total_steps(
    max_steps: int, steps: int, epochs_started: int, examples: int
) -> None:
    model = OneParam(0.0)
    optimizer = make_optimizer("sgd", model.parameters(), lr=0.1, momentum=0.0, weight_decay=0.0)
    controller = Recorder(optimizer)
    loader = counting_loader(10, 3)  # batches of 3, 3, 3, 1

    result = train_local(
        model, loader, optimizer, epochs=3, device=CPU, max_steps=max_steps, controller=controller
    )

    assert result.steps == steps == len(result.lrs)
    assert controller.events.count("epoch") == epochs_started
    assert result.num_examples == examples


def test_train_local_rejects_bad_arguments() -> None:
    model = OneParam(0.0)
    optimizer = make_optimizer("sgd", model.parameters(), lr=0.1, momentum=0.0, weight_decay=0.0)
    with pytest.raises(ValueError, match="epochs"):
        train_local(model, counting_loader(4, 2), optimizer, epochs=0, device=CPU)
    with pytest.raises(ValueError, match="max_steps"):
        train_local(model, counting_loader(4, 2), optimizer, epochs=1, device=CPU, max_steps=-1)


def test_evaluate_hand_computed() -> None:
    # nn.Identity makes the inputs the logits; predictions are 0, 1, 0, 1.
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 0.5]])
    targets = torch.tensor([0, 1, 1, 0])
    expected_loss = (
        math.log1p(math.exp(-2.0))
        + math.log1p(math.exp(-1.0))
        + math.log1p(math.exp(3.0))
        + math.log1p(math.exp(0.5))
    ) / 4
    model = nn.Identity()
    dataset = TensorDataset(logits, targets)

    for data in (dataset, DataLoader(dataset, batch_size=4)):
        result = evaluate(model, data, device=CPU, batch_size=3)
        assert result.accuracy == 0.5 and result.num_examples == 4
        assert result.loss == pytest.approx(expected_loss, rel=1e-6)
    assert model.training  # mode restored


def test_loss_before_step_is_the_loss_of_the_model_moved_back() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    data = TensorDataset(torch.randn(8, 3), torch.tensor([0, 1] * 4))
    step = {"0.weight": torch.full((4, 3), 0.5), "2.bias": torch.tensor([1.0, -2.0])}
    before = {key: value.clone() for key, value in model.state_dict().items()}
    moved_back = copy.deepcopy(model)
    with torch.no_grad():
        moved_back[0].weight -= 0.5
        moved_back[2].bias -= torch.tensor([1.0, -2.0])
    expected = evaluate(moved_back, data, device=CPU).loss
    loss = loss_before_step(model, step, data, device=CPU)
    assert loss == pytest.approx(expected) and loss != evaluate(model, data, device=CPU).loss
    # The model is restored exactly, buffers included.
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_evaluate_empty_data_is_nan() -> None:
    empty = TensorDataset(torch.zeros(0, 2), torch.zeros(0, dtype=torch.int64))
    result = evaluate(nn.Identity(), empty, device=CPU)
    assert result.num_examples == 0 and math.isnan(result.loss) and math.isnan(result.accuracy)


def test_make_optimizer() -> None:
    params = [nn.Parameter(torch.zeros(2))]
    sgd = make_optimizer("sgd", params, lr=0.01, momentum=0.5, weight_decay=1e-4)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.5 and sgd.defaults["weight_decay"] == 1e-4
    adam = make_optimizer("adam", params, lr=0.001, momentum=0.5, weight_decay=0.0)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["lr"] == 0.001
    with pytest.raises(ConfigError, match=r"client\.optimizer.*'rmsprop'"):
        make_optimizer("rmsprop", params, lr=0.01, momentum=0.0, weight_decay=0.0)


def test_pick_device() -> None:
    assert pick_device("cpu") == CPU
    cuda = torch.cuda.is_available()
    assert pick_device("auto").type == ("cuda" if cuda else "cpu")
    if cuda:
        assert pick_device("cuda").type == "cuda"
    else:
        with pytest.raises(ConfigError, match=r"client\.device"):
            pick_device("cuda")
    with pytest.raises(ConfigError, match=r"client\.device"):
        pick_device("tpu")


def _subnormal_survives() -> bool:
    # 1e-39 is below float32's smallest normal number (1.18e-38).
    return bool((torch.tensor([1e-39]) * 2.0).item() != 0.0)


def test_flush_denormals_turns_subnormal_arithmetic_to_zero_and_back() -> None:
    try:
        if not flush_denormals(True):
            pytest.skip("this CPU has no flush-to-zero flags")
        assert not _subnormal_survives()
        assert (torch.tensor([2e-38]) * 2.0).item() == pytest.approx(4e-38)
        flush_denormals(False)
        assert _subnormal_survives()
    finally:
        flush_denormals(False)


def test_set_seed_reproducible() -> None:
    set_seed(123)
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_seed(123)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])
