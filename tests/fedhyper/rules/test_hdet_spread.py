"""FedHDET's spread of multipliers and their per-round permutation."""

from __future__ import annotations

import math

import pytest

from fedhyper.rules.hdet_spread import assigned_multipliers, replica_permutation, spread_multipliers


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
