"""FedHDET's spread hyperparameters of a round's clients, checked against hand-worked values."""

from __future__ import annotations

import math

import pytest

from fedhyper.rules.hdet import HDETSettings, SpreadHyperparameter
from fedhyper.rules.hdet_clients import LR, WEIGHT_DECAY, ClientSpread, relative_loss
from fedhyper.rules.hdet_spread import replica_permutation
from tests.support.hdet import LOSSES_THIRD_BEST

THREE = (0.9, 1.0, 1.1)  # the linear spread of width 0.1 over three clients


def spread(meta_lr: float = 0.5) -> ClientSpread:
    settings = HDETSettings(width=0.1, meta_lr=meta_lr, seed=7)
    return ClientSpread(
        [
            SpreadHyperparameter(LR, 0.1, settings),
            SpreadHyperparameter(WEIGHT_DECAY, 1e-3, settings),
        ]
    )


def test_each_client_slot_gets_each_hyperparameter_by_its_own_permutation() -> None:
    assigned = spread().assign(round_index=4, num_clients=3)
    for name, base in ((LR, 0.1), (WEIGHT_DECAY, 1e-3)):
        levels = replica_permutation(3, seed=7, round_index=4, name=name)
        assert [values[name] for values in assigned] == [base * THREE[j] for j in levels]
    # The two permutations differ in some round, so the values are not correlated.
    assert any(
        replica_permutation(3, 7, r, LR) != replica_permutation(3, 7, r, WEIGHT_DECAY)
        for r in range(1, 6)
    )


def test_a_better_client_at_a_higher_value_moves_every_base_toward_it() -> None:
    clients = spread()
    # Slots with LRs 0.09, 0.10, 0.11 (and weight decays 0.9e-3, 1e-3, 1.1e-3).
    assigned = [{LR: 0.1 * rho, WEIGHT_DECAY: 1e-3 * rho} for rho in THREE]
    steps = clients.update(assigned, LOSSES_THIRD_BEST)
    # w = (1, 1, 2) / 4: Δ = Σ (w − 1/3) η = (−1/12)(0.09 + 0.10) + (1/6) 0.11 = 0.0025,
    # v = 0.1 Δ, base = 0.1 + 0.5 v = 0.100125.
    assert steps[LR].delta == pytest.approx(0.0025, rel=1e-12)
    assert clients.base(LR) == pytest.approx(0.100125, rel=1e-12)
    assert clients.base(WEIGHT_DECAY) == pytest.approx(1e-3 * 1.00125, rel=1e-12)


def test_only_the_answering_clients_count() -> None:
    clients = spread()
    # The best client (LR 0.11) did not answer: the two left have equal losses.
    clients.update([{LR: 0.09, WEIGHT_DECAY: 9e-4}, {LR: 0.1, WEIGHT_DECAY: 1e-3}], [1.0, 1.0])
    assert clients.base(LR) == 0.1


def test_no_meta_lr_keeps_the_base() -> None:
    clients = spread(meta_lr=0.0)
    clients.update([{LR: 0.1 * r, WEIGHT_DECAY: 1e-3 * r} for r in THREE], LOSSES_THIRD_BEST)
    assert clients.base(LR) == 0.1


def test_the_state_round_trips() -> None:
    clients = spread()
    clients.update([{LR: 0.1 * r, WEIGHT_DECAY: 1e-3 * r} for r in THREE], LOSSES_THIRD_BEST)
    restored = spread()
    restored.load_state_dict(clients.state_dict())
    assert restored.state_dict() == clients.state_dict()
    with pytest.raises(KeyError, match="weight_decay"):
        restored.load_state_dict({LR: clients.state_dict()[LR]})


def test_the_learning_rate_is_required_and_names_are_distinct() -> None:
    with pytest.raises(ValueError, match="must be spread"):
        ClientSpread([SpreadHyperparameter(WEIGHT_DECAY, 1e-3)])
    with pytest.raises(ValueError, match="distinct"):
        ClientSpread([SpreadHyperparameter(LR, 0.1), SpreadHyperparameter(LR, 0.2)])


def test_relative_loss_is_what_is_left_of_the_starting_loss() -> None:
    assert relative_loss(2.0, 1.5) == 0.75
    assert math.isnan(relative_loss(0.0, 1.0))
    assert math.isnan(relative_loss(math.inf, 1.0))
