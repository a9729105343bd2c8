"""The start-up figures of the speed benchmark, from hand-made timings."""

from __future__ import annotations

import pytest

from benchmarks.speed import startup, steady


def test_steady_rounds_leave_out_the_first() -> None:
    assert steady([9.0, 2.0, 4.0]) == 3.0
    assert steady([5.0]) == 5.0


def test_startup_is_the_first_round_end_less_a_steady_round_split_in_three() -> None:
    result = {
        "round_s": [6.0, 2.0, 2.0],  # a steady round takes 2 s
        "ray_ready_s": 5.0,
        "nodes_ready_s": 9.5,
        "first_round_end_s": 15.5,
    }
    total, breakdown = startup(result)
    assert total == 13.5
    assert breakdown == {"ray": 5.0, "workers": 4.5, "first_round": 4.0}
    assert sum(breakdown.values()) == pytest.approx(total)
