"""HDETScheduler: FedHDET as a torch learning-rate scheduler."""

from __future__ import annotations

import io
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fedhyper.rules.hdet import HDETSettings
from fedhyper.rules.hdet_scheduler import HDETScheduler
from fedhyper.rules.hdet_spread import replica_permutation, spread_multipliers
from tests.support.hdet import LOSSES_THIRD_BEST
from tests.support.paths import ROOT


def schedulers(
    num_replicas: int = 3, lr: float = 0.1, **kwargs: object
) -> tuple[list[torch.optim.SGD], list[HDETScheduler]]:
    optimizers = [torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=lr) for _ in range(num_replicas)]
    settings = HDETSettings(width=0.5)
    return optimizers, [
        HDETScheduler(opt, rank, num_replicas, settings, **kwargs)  # type: ignore[arg-type]
        for rank, opt in enumerate(optimizers)
    ]


def test_scheduler_sets_each_replica_its_lr_in_the_spread() -> None:
    optimizers, scheds = schedulers()
    lrs = [opt.param_groups[0]["lr"] for opt in optimizers]
    assert sorted(lrs) == pytest.approx([0.05, 0.1, 0.15])
    assert [s.get_last_lr() for s in scheds] == [[lr] for lr in lrs]
    assert lrs == pytest.approx(scheds[0].controllers[0].values(0, 3))


def test_scheduler_moves_the_shared_lr_toward_the_better_replicas() -> None:
    optimizers, scheds = schedulers()
    lrs = [opt.param_groups[0]["lr"] for opt in optimizers]
    # The replica with the largest LR has the lowest loss: the hand-computed step.
    losses = [LOSSES_THIRD_BEST[round((lr / 0.1 - 0.5) * 2)] for lr in lrs]
    for sched in scheds:
        sched.step(losses)
    assert [s.shared_lrs for s in scheds] == [[pytest.approx(0.100625, abs=1e-15)]] * 3
    new_lrs = [opt.param_groups[0]["lr"] for opt in optimizers]
    assert new_lrs == pytest.approx(scheds[0].controllers[0].values(1, 3))
    assert [s.last_epoch for s in scheds] == [1, 1, 1]


def test_scheduler_with_zero_width_leaves_the_lr_alone() -> None:
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    sched = HDETScheduler(optimizer, 1, 4, HDETSettings(width=0.0))
    for losses in [[1.0, 0.5, 0.2, 0.9], [0.1, 0.2, 0.3, 0.4]]:
        sched.step(losses)
        assert optimizer.param_groups[0]["lr"] == 0.1


def test_scheduler_takes_the_losses_of_the_replicas_that_reported() -> None:
    _, scheds = schedulers()
    values = scheds[0].controllers[0].values(0, 3)
    low, high = values.index(min(values)), values.index(max(values))
    for sched in scheds:
        sched.step({low: 1.0, high: 1.0 - 0.1 * math.log(3.0)})
    # As in test_missing_replicas: Δ = 0.025, v = 0.0025, η̄ = 0.1 + 0.00125.
    assert scheds[0].shared_lrs == [pytest.approx(0.10125, abs=1e-15)]
    with pytest.raises(ValueError, match="ranks"):
        scheds[0].step({3: 1.0})
    with pytest.raises(ValueError, match="3 replicas"):
        scheds[0].step([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"torch\.distributed"):
        scheds[0].step(0.5)


def test_scheduler_gives_each_parameter_group_its_own_permutation() -> None:
    levels = [replica_permutation(5, 0, 0, f"param_groups.{g}.lr") for g in (0, 1)]
    assert levels[0] != levels[1]
    lrs = []
    for rank in range(5):
        layer = nn.Linear(2, 1)
        groups = [{"params": [layer.weight], "lr": 0.1}, {"params": [layer.bias], "lr": 0.01}]
        optimizer = torch.optim.SGD(groups, lr=1.0)
        HDETScheduler(optimizer, rank, 5, HDETSettings(width=0.5))
        lrs.append([group["lr"] for group in optimizer.param_groups])
    rho = spread_multipliers(5, 0.5)
    for g, lr in enumerate((0.1, 0.01)):
        assert [row[g] for row in lrs] == pytest.approx([lr * rho[j] for j in levels[g]])


def test_scheduler_state_dict_round_trip() -> None:
    losses = [[1.0, 0.8, 0.9], [0.7, 0.75, 0.6], [0.5, 0.55, 0.52], [0.4, 0.3, 0.35]]
    _, (straight, *_) = schedulers(final_lr=0.05, decay_steps=10)
    for period_losses in losses:
        straight.step(period_losses)
    _, (first, *_) = schedulers(final_lr=0.05, decay_steps=10)
    for period_losses in losses[:2]:
        first.step(period_losses)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # plain values only
    resumed_optimizers, (resumed, *_) = schedulers(final_lr=0.05, decay_steps=10)
    resumed.load_state_dict(state)
    assert resumed.get_last_lr() == first.get_last_lr()
    assert resumed_optimizers[0].param_groups[0]["lr"] == first.get_last_lr()[0]
    for period_losses in losses[2:]:
        resumed.step(period_losses)
    assert resumed.state_dict() == straight.state_dict()
    assert resumed.get_last_lr() == straight.get_last_lr()


def test_scheduler_gathers_a_single_loss_with_torch_distributed(tmp_path: Path) -> None:
    distributed = torch.distributed
    store = f"file://{tmp_path / 'store'}"
    distributed.init_process_group("gloo", init_method=store, rank=0, world_size=1)
    try:
        optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
        HDETScheduler(optimizer, 0, 1).step(torch.tensor(0.5))  # one replica: no change
        assert optimizer.param_groups[0]["lr"] == 0.1
        with pytest.raises(RuntimeError, match="world size 1"):
            schedulers(num_replicas=2)[1][0].step(0.5)
    finally:
        distributed.destroy_process_group()


def test_docs_example_runs_and_raises_the_base_lr() -> None:
    doc = (ROOT / "docs" / "hdet.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    last = result.stdout.strip().splitlines()[-1]
    assert last == "period 30: loss 0.162, base LR 0.0677"  # as printed in the doc
