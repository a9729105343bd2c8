"""Tests of the HDET core: spread, permutation, auto-LR controller and LR scheduler.

Expected values are worked out by hand in the comments.
"""

from __future__ import annotations

import io
import itertools
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from fedhyper.rules.hdet import (
    HDETSettings,
    SpreadHyperparameter,
    decay_rate,
    loss_weights,
)
from fedhyper.rules.hdet_scheduler import HDETScheduler
from fedhyper.rules.hdet_spread import (
    assigned_multipliers,
    replica_permutation,
    spread_multipliers,
)
from tests.support.paths import ROOT

LN2 = math.log(2.0)
# Three replicas at 0.1 x (0.5, 1, 1.5): the values the hand computations below use.
VALUES = (0.05, 0.1, 0.15)
# σ = 0.1: the third loss lower by 0.1 ln 2 gives scores (0, 0, ln 2) + const, so
# w = (1, 1, 2) / 4.
LOSSES_THIRD_BEST = (1.0, 1.0, 1.0 - 0.1 * LN2)


def controller(**kwargs: object) -> SpreadHyperparameter:
    settings = kwargs.pop("settings", HDETSettings(width=0.5))
    return SpreadHyperparameter("lr", 0.1, settings, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- spread


@pytest.mark.parametrize("num_replicas", [1, 2, 3, 4, 7, 10])
@pytest.mark.parametrize("width", [0.0, 1.0 / 9.0, 0.5, 0.99])
def test_linear_spread_sums_to_the_number_of_replicas(num_replicas: int, width: float) -> None:
    rho = spread_multipliers(num_replicas, width, "linear")
    assert len(rho) == num_replicas
    assert math.fsum(rho) == pytest.approx(num_replicas, abs=1e-12)
    assert all(r > 0.0 for r in rho)
    if num_replicas > 1:
        assert rho[0] == pytest.approx(1.0 - width) and rho[-1] == pytest.approx(1.0 + width)


def test_linear_spread_by_hand() -> None:
    # M = 3: u = (-1, 0, 1); M = 2: max((M-1)/2, 0.5) = 0.5, u = (-1, 1); M = 1: u = (0,).
    assert spread_multipliers(3, 0.5) == [0.5, 1.0, 1.5]
    assert spread_multipliers(2, 0.25) == [0.75, 1.25]
    assert spread_multipliers(1, 0.5) == [1.0]
    # The paper's a = 1/9 over 5 replicas: 1 + (1/9)(-1, -1/2, 0, 1/2, 1).
    assert spread_multipliers(5, 1 / 9) == pytest.approx([8 / 9, 17 / 18, 1, 19 / 18, 10 / 9])


@pytest.mark.parametrize("num_replicas", [2, 3, 4, 9])
def test_log_spread_is_symmetric_in_log(num_replicas: int) -> None:
    rho = spread_multipliers(num_replicas, 9.0, "log")
    logs = [math.log(r) for r in rho]
    assert logs == pytest.approx([-x for x in reversed(logs)], abs=1e-12)
    assert math.fsum(logs) == pytest.approx(0.0, abs=1e-12)  # geometric mean 1
    assert rho[0] == pytest.approx(0.1) and rho[-1] == pytest.approx(10.0)


def test_log_spread_by_hand() -> None:
    # (1 + 3)^u with u = (-1, 0, 1).
    assert spread_multipliers(3, 3.0, "log") == [0.25, 1.0, 4.0]


@pytest.mark.parametrize("kind", ["linear", "log"])
def test_zero_width_gives_all_ones(kind: str) -> None:
    assert spread_multipliers(6, 0.0, kind) == [1.0] * 6
    assert assigned_multipliers(6, 0.0, kind, 3, 7, "lr") == [1.0] * 6


@pytest.mark.parametrize(
    ("width", "kind"), [(1.0, "linear"), (-0.1, "linear"), (math.nan, "log"), (0.1, "cubic")]
)
def test_bad_spread_is_refused(width: float, kind: str) -> None:
    with pytest.raises(ValueError, match="spread"):
        spread_multipliers(3, width, kind)


# --------------------------------------------------------------------------- permutation


def test_permutation_is_reproducible_and_a_permutation() -> None:
    first = replica_permutation(8, 0, 5, "lr")
    assert sorted(first) == list(range(8))
    assert replica_permutation(8, 0, 5, "lr") == first
    # Pinned: the permutation must not change across versions, or resumed runs would.
    assert replica_permutation(5, 0, 0, "lr") == [1, 2, 3, 0, 4]


def test_permutation_differs_per_name_round_and_seed() -> None:
    base = replica_permutation(8, 0, 5, "lr")
    assert replica_permutation(8, 0, 5, "weight_decay") != base
    assert replica_permutation(8, 0, 6, "lr") != base
    assert replica_permutation(8, 1, 5, "lr") != base


def test_permutation_gives_every_level_to_every_replica_about_equally() -> None:
    # 300 rounds of 3 replicas: each (replica, level) pair expected 100 times.
    counts = [[0] * 3 for _ in range(3)]
    for round_index in range(300):
        for replica, level in enumerate(replica_permutation(3, 0, round_index, "lr")):
            counts[replica][level] += 1
    assert all(60 <= count <= 140 for row in counts for count in row)


def test_values_are_the_base_times_the_permuted_spread() -> None:
    hp = controller()
    values = hp.values(round_index=4, num_replicas=3)
    levels = replica_permutation(3, 0, 4, "lr")
    assert values == pytest.approx([0.1 * (0.5, 1.0, 1.5)[j] for j in levels])
    assert math.fsum(values) == pytest.approx(0.3)


# --------------------------------------------------------------------------- meta-update


def test_softmax_weights_by_hand() -> None:
    assert loss_weights(LOSSES_THIRD_BEST, 0.1) == pytest.approx([0.25, 0.25, 0.5])
    # A non-finite loss gets weight 0; the others share the softmax.
    assert loss_weights([1.0, math.nan, 1.0, math.inf], 0.1) == [0.5, 0.0, 0.5, 0.0]


def test_one_meta_step_by_hand() -> None:
    hp = controller()
    step = hp.update(VALUES, LOSSES_THIRD_BEST)
    # Δ = 0.25*0.05 + 0.25*0.1 + 0.5*0.15 - 0.1 = 0.0125
    # v = 0.9*0 + 0.1*0.0125 = 0.00125;  η̄ = 0.1 + 0.5*0.00125 = 0.100625
    assert step.applied
    assert step.delta == pytest.approx(0.0125, abs=1e-15)
    assert hp.velocity == pytest.approx(0.00125, abs=1e-15)
    assert hp.base == pytest.approx(0.100625, abs=1e-15)
    assert step.base == hp.base and step.velocity == hp.velocity
    # Equal losses next: Δ = 0, v = 0.9*0.00125 = 0.001125, η̄ = 0.100625 + 0.0005625.
    hp.update(VALUES, (2.0, 2.0, 2.0))
    assert hp.velocity == pytest.approx(0.001125, abs=1e-15)
    assert hp.base == pytest.approx(0.1011875, abs=1e-15)


def test_one_meta_step_with_decay_by_hand() -> None:
    # floor 0.025 over K = 2: γ = 1 - (0.25)^(1/2) = 0.5;  η̄ = 0.1*0.5 + 0.5*0.00125.
    hp = controller(floor=0.025, decay_steps=2)
    assert hp.decay == pytest.approx(0.5)
    hp.update(VALUES, LOSSES_THIRD_BEST)
    assert hp.base == pytest.approx(0.050625, abs=1e-15)


def test_equal_losses_change_nothing() -> None:
    hp = controller()
    for losses in [(1.0, 1.0, 1.0), (0.3, 0.3, 0.3), (7.25, 7.25, 7.25)]:
        step = hp.update(VALUES, losses)
        assert step.applied and step.delta == 0.0
    assert hp.velocity == 0.0
    assert hp.base == 0.1


def test_lower_loss_at_higher_value_moves_the_base_up_and_the_opposite_down() -> None:
    up, down = controller(), controller()
    for _ in range(3):
        up.update(VALUES, (1.0, 0.9, 0.8))
        down.update(VALUES, (0.8, 0.9, 1.0))
    assert up.base > 0.1 > down.base
    assert up.velocity > 0.0 > down.velocity
    # Symmetric spread and mirrored losses: equal and opposite moves.
    assert up.base - 0.1 == pytest.approx(0.1 - down.base, rel=1e-12)


def test_decay_lowers_the_base_to_the_floor_and_never_below() -> None:
    hp = controller(floor=0.01, decay_steps=4)
    bases = []
    for _ in range(8):
        hp.update(VALUES, (1.0, 1.0, 1.0))  # no signal: the decay alone
        bases.append(hp.base)
    assert all(a > b for a, b in itertools.pairwise([0.1, *bases[:4]]))
    # (1 - γ)^k = 0.1^(k/4): 0.1 * 0.1^(1/4) after one step, the floor after four.
    assert bases[0] == pytest.approx(0.1 * 0.1**0.25, rel=1e-12)
    assert bases[3] == pytest.approx(0.01, rel=1e-12)
    assert all(base >= 0.01 for base in bases)
    assert bases[4:] == [0.01] * 4


def test_decay_rate_is_zero_without_decay_and_checks_its_inputs() -> None:
    assert decay_rate(0.1, None, None) == 0.0
    assert decay_rate(0.1, 0.1, 3) == 0.0
    # The official code's sign: final/div = 400 with OneCycle's defaults gives γ < 0.
    assert 0.0 < decay_rate(1.0, 1 / 400, 10) < 1.0
    for floor, steps in [(0.2, 5), (0.0, 5), (0.05, 0), (0.05, None), (None, 5)]:
        with pytest.raises(ValueError):
            decay_rate(0.1, floor, steps)


def test_bounds_hold() -> None:
    hp = controller(bounds=(0.09, 0.1005))
    hp.update(VALUES, LOSSES_THIRD_BEST)  # would reach 0.100625
    assert hp.base == 0.1005
    for _ in range(20):
        hp.update(VALUES, (0.0, 1.0, 2.0))  # lowest loss at the lowest value
    assert hp.base == 0.09


def test_warmup_holds_the_base() -> None:
    hp = controller(settings=HDETSettings(width=0.5, warmup=2))
    assert not hp.update(VALUES, LOSSES_THIRD_BEST).applied
    assert not hp.update(VALUES, LOSSES_THIRD_BEST).applied
    assert (hp.base, hp.velocity) == (0.1, 0.0)
    assert hp.update(VALUES, LOSSES_THIRD_BEST).applied
    assert hp.base == pytest.approx(0.100625, abs=1e-15)  # the first step, by hand above


def test_missing_replicas() -> None:
    hp = controller()
    # Zero or one answer: no comparison, nothing changes.
    assert not hp.update([], []).applied
    assert not hp.update([0.15], [0.1]).applied
    assert (hp.base, hp.velocity) == (0.1, 0.0)
    # Two of three answered: w = softmax((0, ln 3)) = (0.25, 0.75) over values (0.05, 0.15):
    # Δ = 0.25*0.05 + 0.75*0.15 - 0.1 = 0.025.
    step = hp.update([0.05, 0.15], [1.0, 1.0 - 0.1 * math.log(3.0)])
    assert step.delta == pytest.approx(0.025, abs=1e-15)


def test_non_finite_losses_get_no_weight_but_stay_in_the_mean() -> None:
    hp = controller()
    # w = (0.5, 0.5, 0): Δ = 0.5*0.05 + 0.5*0.1 - 0.1 = -0.025: away from the diverged 0.15.
    assert hp.update(VALUES, (1.0, 1.0, math.nan)).delta == pytest.approx(-0.025, abs=1e-15)
    before = hp.state_dict()
    assert not hp.update(VALUES, (math.inf, math.nan, -math.inf)).applied
    assert hp.state_dict() == {**before, "updates": before["updates"] + 1}


def test_bad_controller_input_is_refused() -> None:
    with pytest.raises(ValueError, match="initial"):
        SpreadHyperparameter("lr", 0.0)
    with pytest.raises(ValueError, match="bounds"):
        SpreadHyperparameter("lr", 0.1, bounds=(0.2, 1.0))
    with pytest.raises(ValueError, match="losses"):
        controller().update(VALUES, (1.0, 2.0))
    for bad in [{"momentum": 1.0}, {"temperature": 0.0}, {"meta_lr": -1.0}, {"warmup": -1}]:
        with pytest.raises(ValueError):
            HDETSettings(**bad)  # type: ignore[arg-type]


def test_state_dict_round_trip_continues_identically() -> None:
    losses = [(1.0, 0.7, 0.9), (0.5, 0.6, 0.4), (0.2, 0.3, 0.25), (0.9, 0.1, 0.5), (3.0, 2.0, 1.0)]

    def run(hp: SpreadHyperparameter, rounds: range) -> list[list[float]]:
        trace = []
        for r in rounds:
            values = hp.values(r, 3)
            hp.update(values, losses[r])
            trace.append([*values, hp.base, hp.velocity])
        return trace

    def make() -> SpreadHyperparameter:
        settings = HDETSettings(width=0.5, warmup=1, seed=7)
        return SpreadHyperparameter("lr", 0.1, settings, floor=0.02, decay_steps=10)

    straight = make()
    expected = run(straight, range(5))
    first = make()
    run(first, range(2))
    state = first.state_dict()
    assert {type(value) for value in state.values()} <= {float, int}
    resumed = make()
    resumed.load_state_dict(state)
    assert run(resumed, range(2, 5)) == expected[2:]  # bit-identical
    assert resumed.state_dict() == straight.state_dict()
    with pytest.raises(KeyError, match="velocity"):
        resumed.load_state_dict({"base": 0.1, "updates": 0})


# --------------------------------------------------------------------------- scheduler


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
