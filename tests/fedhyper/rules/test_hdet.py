"""FedHDET's spread hyperparameter: loss weights, meta steps, decay, bounds and state."""

from __future__ import annotations

import itertools
import math

import pytest

from fedhyper.rules.hdet import HDETSettings, SpreadHyperparameter, decay_rate, loss_weights
from fedhyper.rules.hdet_spread import replica_permutation
from tests.support.hdet import LOSSES_THIRD_BEST

# Three replicas at 0.1 x (0.5, 1, 1.5): the values the hand computations below use.
VALUES = (0.05, 0.1, 0.15)


def controller(**kwargs: object) -> SpreadHyperparameter:
    settings = kwargs.pop("settings", HDETSettings(width=0.5))
    return SpreadHyperparameter("lr", 0.1, settings, **kwargs)  # type: ignore[arg-type]


def test_values_are_the_base_times_the_permuted_spread() -> None:
    hp = controller()
    values = hp.values(round_index=4, num_replicas=3)
    levels = replica_permutation(3, 0, 4, "lr")
    assert values == pytest.approx([0.1 * (0.5, 1.0, 1.5)[j] for j in levels])
    assert math.fsum(values) == pytest.approx(0.3)


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
